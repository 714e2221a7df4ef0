"""The assembled model: three encoders -> one shared backbone -> four heads.

`forward(task, **inputs)` dispatches to one task so DistributedDataParallel sees a single entry
point; losses live in fm_multi/tasks/, decoding in fm_multi/engine.py.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fm_multi.config import ModelConfig
from fm_multi.model.backbone import Backbone
from fm_multi.model.encoders import AUDIO, TEXT, VISION, AudioEncoder, TextEncoder, VisionEncoder
from fm_multi.model.heads import ClassifyHead, CTCHead, DetectHead
from fm_multi.model.kv_cache import KVCache

TASKS = ("chat", "summarize", "classify", "detect", "transcribe")


class FMMulti(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        self.modality = nn.Parameter(torch.zeros(3, c.d_model))  # text, vision, audio
        self.text = TextEncoder(c.vocab_size, c.d_model, c.max_seq_len)
        self.vision = VisionEncoder(c.d_model, c.image_size, c.patch_size, stem=c.vision_stem)
        self.audio = AudioEncoder(c.d_model, c.n_mels, c.audio_stride)
        self.backbone = Backbone(c.d_model, c.n_layer, c.n_head, c.mlp_ratio, c.dropout)
        self.classify_head = ClassifyHead(c.d_model, c.n_classify)
        self.detect_head = DetectHead(c.d_model, c.n_detect)
        self.ctc_head = CTCHead(c.d_model, c.n_ctc)
        self.apply(self._init_weights)
        nn.init.constant_(self.detect_head.cls[-1].bias, -4.6)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # --- one method per head -------------------------------------------------------------
    def forward_text(self, idx: torch.Tensor, kv_cache: KVCache | None = None,
                     last_only: bool = False) -> torch.Tensor:
        """idx: (B, T) -> next-token logits (B, T, vocab), or (B, 1, vocab) for the last position
        only when last_only (all generation needs; it skips the widest matmul for every prompt
        position). Causal; continues kv_cache if given."""
        start = kv_cache.pos if kv_cache is not None else 0
        x = self.text(idx, self.modality[TEXT], start)
        h = self.backbone(x, causal=True, kv_cache=kv_cache)
        if last_only:
            h = h[:, -1:]
        return F.linear(h, self.text.tok.weight)  # tied LM head: (B, T or 1, vocab)

    def forward_classify(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: (B, 3, H, W) normalised -> class logits (B, n_classify)."""
        x, mask = self.vision(pixels, self.modality[VISION])
        return self.classify_head(self.backbone(x, mask, n_out=1))  # the head reads only the CLS token

    def forward_detect(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """pixels: (B, 3, H, W) normalised -> per-patch logits (B, N, C) and boxes (B, N, 4)."""
        x, mask = self.vision(pixels, self.modality[VISION])
        p = self.config.patch_size
        return self.detect_head(self.backbone(x, mask), pixels.size(2) // p, pixels.size(3) // p)

    def forward_transcribe(self, mel: torch.Tensor, mel_lengths: torch.Tensor):
        """mel: (B, n_mels, T) -> CTC logits (B, T', n_ctc) and valid lengths (B,)."""
        x, mask = self.audio(mel, mel_lengths, self.modality[AUDIO])
        return self.ctc_head(self.backbone(x, mask)), mask.sum(1)

    def forward(self, task: str, **inputs):
        if task in ("chat", "summarize"):
            return self.forward_text(**inputs)
        if task == "classify":
            return self.forward_classify(**inputs)
        if task == "detect":
            return self.forward_detect(**inputs)
        if task == "transcribe":
            return self.forward_transcribe(**inputs)
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        c = self.config
        p = next(self.parameters())
        return KVCache(c.n_layer, batch_size, c.n_head, max_len or c.max_seq_len, c.d_model // c.n_head,
                       device=p.device, dtype=p.dtype)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part; the tied LM head counts under the text encoder."""
        def count(m):
            return sum(p.numel() for p in m.parameters())
        parts = {
            "text_encoder": count(self.text), "vision_encoder": count(self.vision),
            "audio_encoder": count(self.audio), "modality_embedding": self.modality.numel(),
            "backbone": count(self.backbone), "lm_head (tied)": 0,
            "classify_head": count(self.classify_head), "detect_head": count(self.detect_head),
            "ctc_head": count(self.ctc_head),
        }
        parts["total"] = count(self)
        return parts
