"""Encoders: raw input tensors -> tokens (B, N, D) plus a padding mask (B, N), True = real.

Each adds a learned modality embedding so the shared backbone knows what it reads.

Legend: b batch, c channels, h/w patch grid, p1/p2 patch side, t time, f mel bins, d model width.

- TextEncoder: BPE ids -> token + learned position embeddings (GPT-2).
- VisionEncoder: ViT patches (Dosovitskiy et al., 2021), or a convolutional stem with the same
  output grid (Xiao et al., 2021), with a CLS token; the learned 2-D position grid is resampled
  bicubically for other image sizes.
- AudioEncoder: 80-bin log-mel frames subsampled 4x in time by strided 1-D convolutions
  (as Whisper's stem, Radford et al., 2022), with sinusoidal positions for any length.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange

TEXT, VISION, AUDIO = 0, 1, 2  # rows of the modality embedding


class TextEncoder(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, max_seq_len: int):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_seq_len, d_model)
        self.max_seq_len = max_seq_len

    def forward(self, idx: torch.Tensor, modality: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        """idx: (B, T) token ids, starting at position start_pos (KV-cache decoding). -> (B, T, D)"""
        T = idx.size(1)
        if start_pos + T > self.max_seq_len:
            raise ValueError(f"text of {start_pos + T} tokens exceeds max_seq_len {self.max_seq_len}")
        # A slice of the position table, not an embedding lookup: one view instead of arange + gather
        # on every decoding step.
        return self.tok(idx) + self.pos.weight[start_pos:start_pos + T] + modality


def conv_stem(channels: int, d_model: int, patch_size: int) -> nn.Sequential:
    """log2(patch_size) stride-2 3x3 convolutions (widths doubling up to d_model / 2), each with a
    one-group GroupNorm (batch-size independent) and GELU, then a 1x1 projection to d_model."""
    n = int(math.log2(patch_size))
    layers, c = [], channels
    for i in range(n):
        width = max(d_model >> (n - i), 8)
        layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.GroupNorm(1, width), nn.GELU()]
        c = width
    return nn.Sequential(*layers, nn.Conv2d(c, d_model, 1), Rearrange("b d h w -> b (h w) d"))


class VisionEncoder(nn.Module):
    def __init__(self, d_model: int, image_size: int, patch_size: int, channels: int = 3, stem: str = "patch"):
        super().__init__()
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        if stem == "conv":
            self.to_patches = conv_stem(channels, d_model, patch_size)
        else:
            self.to_patches = nn.Sequential(
                Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size),
                nn.Linear(channels * patch_size * patch_size, d_model),
            )
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos = nn.Parameter(torch.randn(1, self.grid * self.grid, d_model) * 0.02)
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, d_model))

    def grid_positions(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings (1, h*w, D) for an h x w patch grid, resampled from the trained grid."""
        if (h, w) == (self.grid, self.grid):
            return self.pos
        pos = rearrange(self.pos, "1 (h w) d -> 1 d h w", h=self.grid)
        pos = F.interpolate(pos.float(), size=(h, w), mode="bicubic", align_corners=False)
        return rearrange(pos, "1 d h w -> 1 (h w) d").type_as(self.pos)

    def forward(self, pixels: torch.Tensor, modality: torch.Tensor):
        """pixels: (B, 3, H, W) normalised, H and W multiples of patch_size.

        Returns tokens (B, 1 + h*w, D) with the CLS token first, and an all-True mask.
        """
        B, _, H, W = pixels.shape
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"image {H}x{W} is not a multiple of patch_size {self.patch_size}")
        x = self.to_patches(pixels) + self.grid_positions(H // self.patch_size, W // self.patch_size)
        cls = (self.cls + self.cls_pos).expand(B, -1, -1)
        x = torch.cat([cls, x], dim=1) + modality
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


def sinusoids(length: int, channels: int, device=None) -> torch.Tensor:
    """Fixed sinusoidal positions (length, channels), valid for any length."""
    half = channels // 2
    inv = torch.exp(-math.log(10_000) * torch.arange(half, device=device) / max(half - 1, 1))
    t = torch.arange(length, device=device)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1)


class AudioEncoder(nn.Module):
    def __init__(self, d_model: int, n_mels: int, stride: int):
        super().__init__()
        if stride not in (1, 2, 4):
            raise ValueError(f"audio stride must be 1, 2 or 4, got {stride}")
        n_down = int(math.log2(stride))
        convs = [nn.Conv1d(n_mels, d_model, 3, padding=1)]
        convs += [nn.Conv1d(d_model, d_model, 3, stride=2, padding=1) for _ in range(n_down)]
        self.convs = nn.ModuleList(convs)
        self.stride = stride

    def output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        """Tokens produced from `frames` mel frames (each stride-2 conv halves, rounding up)."""
        for _ in range(len(self.convs) - 1):
            frames = (frames + 1) // 2
        return frames

    def forward(self, mel: torch.Tensor, mel_lengths: torch.Tensor, modality: torch.Tensor):
        """mel: (B, n_mels, T) log-mel; mel_lengths: (B,) valid frames.

        Returns tokens (B, T', D) with T' = ceil(T / stride) and the padding mask (B, T').
        """
        # Zero every frame past a clip's end before each conv, so a padded clip in a batch gives
        # exactly the tokens it gives alone (where the conv sees the same zero padding).
        x, lengths = mel, mel_lengths
        for i, conv in enumerate(self.convs):
            if i > 1:
                lengths = (lengths + 1) // 2
            x = x * (torch.arange(x.size(2), device=x.device)[None, :] < lengths[:, None])[:, None, :]
            x = F.gelu(conv(x))
        lengths = self.output_lengths(mel_lengths)
        mask = torch.arange(x.size(2), device=x.device)[None, :] < lengths[:, None]  # (B, T')
        x = rearrange(x * mask[:, None, :], "b d t -> b t d")
        x = x + sinusoids(x.size(1), x.size(2), device=x.device).to(x.dtype) + modality
        return x, mask
