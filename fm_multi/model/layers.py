"""Transformer building blocks: fp32 LayerNorm, attention through SDPA, MLP, pre-norm block.

Attention follows "Attention Is All You Need" (Vaswani et al., 2017) with the pre-norm
placement of GPT-2; `scaled_dot_product_attention` picks the fused kernel for the device.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fm_multi.model.kv_cache import KVCache


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype (stable under bf16 autocast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # Already fp32: skip the four casts, which cost a call each on every decoding step.
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(),
                            self.bias.float(), self.eps).type_as(x)


class Attention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, causal: bool = False,
                kv_cache: KVCache | None = None, layer: int = 0, n_out: int | None = None) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C), or (B, n_out, C) for the first n_out queries over all T keys."""
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head)  # (B, T, 3, nh, hs)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                  # 3 x (B, nh, T, hs)
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.insert(layer, k, v)  # (B, nh, past + T, hs)
            if causal and past > 0:
                causal = False
                if T > 1:
                    # New queries sit at positions past..past+T-1 and may see every key up to themselves.
                    q_pos = torch.arange(past, past + T, device=x.device)[:, None]
                    attn_mask = q_pos >= torch.arange(past + T, device=x.device)[None, :]  # (T, past + T)
                # One new query (a decoding step) is the last position and sees every key: no mask,
                # which saves building one per layer per token and lets SDPA take its unmasked kernel.
        if n_out is not None:
            q = q[:, :, :n_out]  # (B, nh, n_out, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, q.size(2), C)  # (B, T or n_out, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(d_model, hidden)
        self.proj = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.ln1 = LayerNorm(d_model)
        self.attn = Attention(d_model, n_head, dropout)
        self.ln2 = LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio * d_model, dropout)

    def forward(self, x, attn_mask=None, causal=False, kv_cache=None, layer=0, n_out=None):
        """n_out: compute only the first n_out tokens' outputs (they still attend to every token)."""
        h = self.attn(self.ln1(x), attn_mask, causal, kv_cache, layer, n_out)
        x = (x if n_out is None else x[:, :n_out]) + h
        return x + self.mlp(self.ln2(x))
