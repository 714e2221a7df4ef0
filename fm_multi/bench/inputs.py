"""Inputs every benchmark shares: speech clips, test images, a random-weights checkpoint.

Speech clips are spoken by espeak-ng or flite when one is installed, so pocketsphinx hears real
phonemes; without either they are a deterministic synthetic voice-like signal (a gliding harmonic
tone whose loudness rises and falls at a syllable rate, plus a little noise). Speed does not depend
on what is said, so the fallback changes no timing, only what pocketsphinx prints.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fm_multi.config import ModelConfig
from fm_multi.preprocess import SAMPLE_RATE, load_audio

SENTENCES = [
    "the quick brown fox jumps over the lazy dog near the river bank",
    "please open the door and turn on the light in the kitchen",
    "a red apple and a small dog sit together on the wooden table",
    "the weather today is cold and windy with rain in the evening",
    "speech recognition turns spoken words into written text quickly",
    "seven people walked across the bridge before the sun went down",
]

# A small corpus for the benchmark tokenizer; its vocabulary is then padded to the preset's size.
CORPUS = SENTENCES * 10 + ["what is two plus three? five.", "summarize this text in one line."] * 10


def _speak(text: str, out: Path) -> str | None:
    """Write `text` spoken to out (wav); return the synthesizer used, or None if none is installed."""
    for tool, cmd in (("espeak-ng", ["espeak-ng", "-w", str(out), text]),
                      ("flite", ["flite", "-t", text, "-o", str(out)])):
        if shutil.which(tool):
            try:
                subprocess.run(cmd, check=True, capture_output=True, timeout=30)
                return tool
            except (subprocess.SubprocessError, OSError):
                continue
    return None


def synthetic_voice(seconds: float, seed: int) -> np.ndarray:
    """A deterministic voice-like signal at 16 kHz: harmonics of a gliding pitch, syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + seed)               # Hz
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t + seed), 0, None)      # ~4 syllables per second
    wave = wave * envelope + 0.01 * rng.standard_normal(t.size)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def speech_clips(n: int) -> tuple[list[np.ndarray], str]:
    """n clips of 16 kHz mono float32 speech and the name of what produced them."""
    clips, source = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate((SENTENCES * (n // len(SENTENCES) + 1))[:n]):
            path = Path(tmp) / f"clip{i}.wav"
            used = _speak(text, path)
            if used is None:
                break
            source = used
            clips.append(load_audio(path).numpy())
    if len(clips) < n:
        clips, source = [synthetic_voice(3.0 + i % 3, seed=i) for i in range(n)], "synthetic signal"
    return clips, source


def photo(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """A camera-sized RGB image (smooth gradients plus noise), so preprocessing does a real resize."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    pixels = np.clip(base + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def random_checkpoint(folder: Path, cfg: ModelConfig, seed: int = 0) -> Path:
    """Write a random-weights checkpoint with cfg's dimensions (speed does not depend on weights).

    The tokenizer is trained on a few sentences, then padded with unused tokens up to
    cfg.vocab_size so the LM head and embedding cost what they will in a trained model.
    """
    from fm_multi.checkpoint import save_checkpoint
    from fm_multi.data.tokenizer import train_tokenizer
    from fm_multi.model import FMMulti

    tokenizer = train_tokenizer(CORPUS, min(cfg.vocab_size, 512))
    missing = cfg.vocab_size - tokenizer.get_vocab_size()
    if missing > 0:
        tokenizer.add_tokens([f"<|unused{i}|>" for i in range(missing)])
    cfg = ModelConfig.from_dict({**cfg.to_dict(), "vocab_size": tokenizer.get_vocab_size()})
    torch.manual_seed(seed)
    labels = {"classify": [f"class {i}" for i in range(cfg.n_classify)],
              "detect": [f"object {i}" for i in range(cfg.n_detect)]}
    return save_checkpoint(folder, FMMulti(cfg), tokenizer, labels)
