"""The shared Transformer backbone: one stack of pre-norm blocks used by every task.

Text runs it causally (with an optional KV cache); images and audio run it
bidirectionally with a key padding mask.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from fm_multi.model.kv_cache import KVCache
from fm_multi.model.layers import Block, LayerNorm


class Backbone(nn.Module):
    def __init__(self, d_model: int, n_layer: int, n_head: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.n_head = n_head
        self.blocks = nn.ModuleList(Block(d_model, n_head, mlp_ratio, dropout) for _ in range(n_layer))
        self.ln_f = LayerNorm(d_model)

    def start_as_identity(self, first: int) -> None:
        """Zero the residual outputs (attention and MLP projections) of blocks `first` onwards, so
        each passes its input through unchanged until training moves them: a checkpoint of `first`
        blocks grown deeper computes what it did before (the new blocks still get gradients)."""
        for block in self.blocks[first:]:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, causal: bool = False,
                kv_cache: KVCache | None = None, n_out: int | None = None) -> torch.Tensor:
        """x: (B, N, D) tokens; padding_mask: (B, N) bool, True where a token is real.

        Returns (B, N, D), or (B, n_out, D) for the first n_out tokens only: the last block then
        skips the other tokens' queries and MLP, which nothing downstream would read (classification
        reads only the CLS token). Causal attention ignores padding_mask: right-padded text is never
        attended by an earlier real token, and its outputs are masked out of the loss.
        """
        attn_mask = None
        if padding_mask is not None and not causal:
            attn_mask = padding_mask[:, None, None, :]  # (B, 1, 1, N): every query sees real keys
        n_new, last = x.size(1), len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask, causal, kv_cache, i, n_out if i == last else None)
        if kv_cache is not None:
            kv_cache.advance(n_new)
        return self.ln_f(x)
