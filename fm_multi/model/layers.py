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
                kv_cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.insert(layer, k, v)  # (B, nh, past + T, hs)
            if causal and past > 0:
                # New queries sit at positions past..past+T-1 and may see every key up to themselves.
                q_pos = torch.arange(past, past + T, device=x.device)[:, None]
                attn_mask = q_pos >= torch.arange(past + T, device=x.device)[None, :]  # (T, past + T)
                causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
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

    def forward(self, x, attn_mask=None, causal=False, kv_cache=None, layer=0):
        x = x + self.attn(self.ln1(x), attn_mask, causal, kv_cache, layer)
        return x + self.mlp(self.ln2(x))
