"""A pre-allocated key/value cache for autoregressive decoding.

One tensor pair for all layers, allocated once for the longest sequence; each
decoding step writes its keys/values in place instead of concatenating.
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_dim: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0  # tokens already stored (same for every layer once a forward completes)
        # Per-layer views, made once, so a decoding step narrows one 4-D view per layer instead of
        # indexing the 5-D tensor (a handful of small ops per layer per token).
        self.layer_k, self.layer_v = self.k.unbind(0), self.v.unbind(0)  # n_layer x (B, nh, max_len, hs)

    def insert(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) at the current position; return all keys/values so far."""
        T = k.size(2)
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} tokens > max_len {self.max_len}")
        lk, lv = self.layer_k[layer], self.layer_v[layer]
        lk.narrow(2, self.pos, T).copy_(k)
        lv.narrow(2, self.pos, T).copy_(v)
        return lk.narrow(2, 0, end), lv.narrow(2, 0, end)

    def advance(self, n: int) -> None:
        """Called once per forward, after every layer has inserted its n new tokens."""
        self.pos += n

    def select(self, rows: torch.Tensor) -> None:
        """Keep these batch rows, in this order (repeats allowed): beam search widens and reorders its beams."""
        self.k, self.v = self.k[:, rows], self.v[:, rows]
        self.layer_k, self.layer_v = self.k.unbind(0), self.v.unbind(0)

    def reset(self) -> None:
        self.pos = 0
