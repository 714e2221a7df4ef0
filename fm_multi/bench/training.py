"""Training throughput per task: a few AdamW steps on synthetic batches at the model's dimensions.

Each step is forward + the task's own loss (fm_multi/tasks/) + backward + optimizer step, on a copy
of the model so the pipeline being benchmarked is left untouched. The step runs in the precision
`fm-multi train` picks by default (bf16 autocast on a GPU and on a CPU with native bf16, else fp32;
the row's note says which), and on a GPU the row also reports model FLOPs utilisation (MFU):

    FLOPs per step = tokens * (6 * N + 12 * n_layer * d_model * T)

N is the parameters the task multiplies by (its encoder's projections, the backbone, its head; for
text the tied LM head, not position tables), T the tokens per sample; the second term is attention
(PaLM, Chowdhery et al., 2022, appendix B). MFU = achieved FLOP/s over the GPU's dense bf16 peak.
"""
from __future__ import annotations

import copy

import torch

from fm_multi.bench.timing import Budget, median, row, time_call
from fm_multi.tasks import chat, classify, detect, transcribe
from fm_multi.train import resolve_precision

# Dense (no 2:4 sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's datasheets: H100/H200 SXM
# 989 (1,979 with sparsity), H100 PCIe 756, A100 312, L40S 362, L4 121, RTX 4090 165. The first
# matching substring of the device name wins, so specific names come first.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H200", 989.0), ("H100", 989.0), ("A100", 312.0),
                    ("L40S", 362.0), ("L4", 121.0), ("4090", 165.0))

BATCH = {"chat": 8, "classify": 32, "detect": 8, "transcribe": 8}
TEXT_TOKENS = 128
AUDIO_SECONDS = 5
TARGET_CHARS = 40  # CTC targets per clip, well under the 125 tokens of a 5 s clip


def peak_tflops(device_name: str) -> float | None:
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS if key in device_name), None)


def make_batch(task: str, cfg, device) -> tuple[dict, int]:
    """A synthetic batch for `task` and the backbone tokens per sample."""
    g = torch.Generator().manual_seed(0)
    B = BATCH[task]
    if task == "chat":
        T = min(TEXT_TOKENS, cfg.max_seq_len)
        ids = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=g).to(device)
        return {"idx": ids[:, :-1], "targets": ids[:, 1:]}, T
    if task in ("classify", "detect"):
        S = cfg.image_size if task == "classify" else cfg.detect_image_size
        batch = {"pixels": torch.randn(B, 3, S, S, generator=g).to(device)}
        if task == "classify":
            batch["labels"] = torch.randint(0, cfg.n_classify, (B,), generator=g).to(device)
        else:
            boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.4, 0.3, 0.9, 0.8]])  # two objects per image
            batch["targets"] = [{"boxes": boxes, "labels": torch.tensor([0, 1]) % cfg.n_detect}] * B
        return batch, 1 + (S // cfg.patch_size) ** 2
    frames = AUDIO_SECONDS * 100  # 10 ms hop
    batch = {"mel": torch.randn(B, cfg.n_mels, frames, generator=g).to(device),
             "mel_lengths": torch.full((B,), frames, device=device),
             "targets": torch.randint(1, cfg.n_ctc, (B * TARGET_CHARS,), generator=g).to(device),
             "target_lengths": torch.full((B,), TARGET_CHARS, device=device)}
    return batch, -(-frames // cfg.audio_stride)


def multiplied_parameters(model, task: str) -> int:
    def count(*modules):
        return sum(p.numel() for m in modules for p in m.parameters())

    n = count(model.backbone)
    if task == "chat":
        return n + model.text.tok.weight.numel()
    if task == "classify":
        return n + count(model.vision.to_patches, model.classify_head)
    if task == "detect":
        return n + count(model.vision.to_patches, model.detect_head)
    return n + count(model.audio, model.ctc_head)


LOSSES = {"chat": chat.loss, "classify": classify.loss, "detect": detect.loss, "transcribe": transcribe.loss}


def step_seconds(model, opt, loss_fn, batch, budget: Budget, device, bf16: bool) -> tuple[float, int]:
    """Median seconds of one optimizer step after warm-up, and how many steps were timed."""
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(budget.warmup):
        step()
    times = []
    while len(times) < max(budget.train_steps, 1) and sum(times) < budget.max_seconds:
        times.append(time_call(step))
    return median(times), len(times)


def run(pipe, budget: Budget) -> list[dict]:
    device, cfg = pipe.device, pipe.config
    model = copy.deepcopy(pipe.model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    on_gpu = device.type == "cuda"
    precision = resolve_precision("auto", device)
    gpu = torch.cuda.get_device_name(device) if on_gpu else ""
    peak = peak_tflops(gpu) if on_gpu else None
    rows = []
    for task, loss_fn in LOSSES.items():
        batch, T = make_batch(task, cfg, device)
        s, steps = step_seconds(model, opt, loss_fn, batch, budget, device, bf16=precision == "bf16")
        B = BATCH[task]
        rows.append(row(f"train {task} samples/s (B={B}, {T} tokens each)", B / s, "samples/s",
                        note=f"median of {steps} steps, {precision}"))
        rows.append(row(f"train {task} tokens/s", B * T / s, "tok/s"))
        tflops = B * T * (6 * multiplied_parameters(model, task) + 12 * cfg.n_layer * cfg.d_model * T) / s / 1e12
        if peak is None:
            why = f"no peak known for {gpu}" if on_gpu else "n/a on CPU"
            rows.append(row(f"train {task} MFU", None, "%", note=f"{why}; {tflops:.3g} TFLOP/s achieved"))
        else:
            rows.append(row(f"train {task} MFU", 100 * tflops / peak, "%",
                            note=f"{tflops:.3g} of {peak:g} TFLOP/s bf16 dense"))
    return rows
