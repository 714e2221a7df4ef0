"""Model configuration: one dataclass and the presets.

Only builders read a config; layers take explicit ints (see model/).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# The CTC alphabet for speech-to-text: index 0 is the CTC blank.
CTC_ALPHABET = ["<blank>", " "] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["'"]


@dataclass
class ModelConfig:
    vocab_size: int = 8192        # BPE vocabulary (set from the tokenizer)
    d_model: int = 256
    n_layer: int = 6
    n_head: int = 8
    mlp_ratio: int = 4
    dropout: float = 0.0
    max_seq_len: int = 384        # text positions (prompt + generation)
    image_size: int = 64          # classification input side, pixels
    detect_image_size: int = 128  # detection input side, pixels
    patch_size: int = 8           # ViT patch side; positions interpolate to other sizes
    n_mels: int = 80              # log-mel bins (16 kHz, 10 ms hop)
    audio_stride: int = 4         # time subsampling of the audio encoder: 40 ms per token
    max_audio_seconds: float = 30.0
    n_classify: int = 10          # set from labels.json
    n_detect: int = 10            # set from labels.json
    n_ctc: int = len(CTC_ALPHABET)

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        for side in (self.image_size, self.detect_image_size):
            if side % self.patch_size:
                raise ValueError(f"image side {side} must be a multiple of patch_size={self.patch_size}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


def tiny() -> ModelConfig:
    """Seconds-per-step model for tests."""
    return ModelConfig(d_model=64, n_layer=2, n_head=4, max_seq_len=256, image_size=32,
                       detect_image_size=64, patch_size=8)


def small() -> ModelConfig:
    """The CPU default: trains on 2 cores, ~15 MB in bf16."""
    return ModelConfig(d_model=256, n_layer=6, n_head=8)


def base() -> ModelConfig:
    """A GPU-sized model (ViT-B / GPT-2 small widths)."""
    return ModelConfig(d_model=768, n_layer=12, n_head=12, max_seq_len=1024, image_size=128,
                       detect_image_size=256, patch_size=16)


PRESETS = {"tiny": tiny, "small": small, "base": base}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    return ModelConfig.from_dict({**cfg.to_dict(), **overrides})
