"""Data-parallel training across processes started by `torchrun`: process group, gradient averaging.

Why not DistributedDataParallel: every micro-batch here runs one task, so each step leaves most
heads and two of the three encoders without gradients. DDP would need find_unused_parameters=True
(a graph walk every step) and would hand Adam zero gradients for the unused parameters, which still
move them through momentum and weight decay. Instead every rank runs the same task in the same
micro-step (the task schedule is a function of the step), so all ranks hold gradients for the same
parameters; after the last micro-batch of a step those gradients are flattened into one buffer and
averaged with a single all_reduce. Parameters a step did not use keep `grad=None`, and AdamW skips
them, exactly as in a one-process run. On one GPU node the missed overlap of communication with the
backward pass costs little at these model sizes.

NCCL serves CUDA devices, gloo the CPU. Without torchrun's environment everything here is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(local_rank: int = 0) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup() -> Context:
    """Join the process group described by torchrun's RANK/WORLD_SIZE/LOCAL_RANK, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:
            # Processes share the CPU cores: one intra-op thread each keeps them from fighting.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Context(rank, world_size, local_rank, device)


def teardown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(model: torch.nn.Module, ctx: Context) -> None:
    """Start every rank from rank 0's weights (and buffers)."""
    if not ctx.enabled:
        return
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


def average_gradients(model: torch.nn.Module, ctx: Context) -> None:
    """Average `.grad` over ranks with one all_reduce; parameters without a gradient are left alone."""
    if not ctx.enabled:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= ctx.world_size
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def all_reduce_mean(values: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Mean over ranks of a tensor (a copy; the input is untouched)."""
    values = values.detach().clone()
    if ctx.enabled:
        dist.all_reduce(values)
        values /= ctx.world_size
    return values


def all_reduce_sum(values: torch.Tensor, ctx: Context) -> torch.Tensor:
    values = values.detach().clone()
    if ctx.enabled:
        dist.all_reduce(values)
    return values


def gather_objects(obj, ctx: Context) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (small picklable objects only)."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


def max_weight_difference(model: torch.nn.Module, ctx: Context) -> float:
    """Largest absolute difference of any weight between this rank and rank 0 (0 on one process)."""
    if not ctx.enabled:
        return 0.0
    flat = _flatten_dense_tensors([p.detach() for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = torch.tensor([float((flat - reference).abs().max())], device=flat.device)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)
