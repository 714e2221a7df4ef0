"""Raw input -> model tensors: images to normalised pixels, audio to 16 kHz log-mel frames.

Audio constants follow Whisper's front end (16 kHz, 25 ms window, 10 ms hop, 80 mel bins).
Nothing here loops over pixels or samples in Python.
"""
from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import torch
import torchaudio
from PIL import Image, ImageOps

SAMPLE_RATE = 16_000
N_FFT = 400                              # 25 ms window
HOP_LENGTH = 160                         # 10 ms hop -> 100 frames per second
N_MELS = 80
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100

IMAGE_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGE_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


# --- images -------------------------------------------------------------------------------
def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (L, LA, P, RGBA, I;16, CMYK...) -> RGB; transparency is composited on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, image).convert("RGB")
    if image.mode == "I;16" or image.mode == "I":
        arr = np.asarray(image, dtype=np.float32)
        arr = 255 * (arr - arr.min()) / max(float(arr.max() - arr.min()), 1.0)
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def image_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """PIL image -> (3, size, size) float tensor, squashed to a square and normalised.

    Squashing (not cropping) keeps the whole picture, so detection boxes map back to the input's
    pixels by a per-axis scale.
    """
    image = to_rgb(image).resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return (x - IMAGE_MEAN) / IMAGE_STD


def open_image(source) -> Image.Image:
    """A path, bytes, numpy array (H, W[, C]) or PIL image -> a loaded PIL image."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return Image.fromarray(source)
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    image = Image.open(source)
    image.load()
    return image


# --- audio --------------------------------------------------------------------------------
def to_mono_16k(audio: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(T,) or (T, C) samples at any rate, int or float -> float32 mono (T',) at 16 kHz in [-1, 1]."""
    x = torch.as_tensor(np.asarray(audio))
    if not x.is_floating_point():
        # integer PCM: scale by the type's range (int16 -> 32768, int32 -> 2**31)
        x = x.float() / float(torch.iinfo(x.dtype).max + 1)
    x = x.float()
    if x.ndim == 2:
        # gradio and soundfile give (T, C); a (C, T) array with few rows is transposed
        x = x.mean(dim=1) if x.shape[1] <= x.shape[0] else x.mean(dim=0)
    if x.ndim != 1:
        raise ValueError(f"audio must be 1-D or 2-D samples, got shape {tuple(x.shape)}")
    if sample_rate != SAMPLE_RATE:
        x = torchaudio.functional.resample(x, sample_rate, SAMPLE_RATE)
    return x.clamp(-1.0, 1.0)


def load_audio(path: str | Path) -> torch.Tensor:
    """Read a file with soundfile (wav, flac, ogg, mp3 with libsndfile >= 1.1) -> mono 16 kHz."""
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return to_mono_16k(data, sr)


@functools.lru_cache(maxsize=4)
def _mel_transform(device: str) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS).to(device)


def log_mel(audio: torch.Tensor) -> torch.Tensor:
    """(T,) mono 16 kHz samples -> (N_MELS, T // HOP_LENGTH + 1) log-mel, scaled to about [-1, 1].

    Dynamic range is clipped to 80 dB below the loudest bin, as Whisper does.
    """
    mel = _mel_transform(str(audio.device))(audio.float())
    logmel = torch.clamp(mel, min=1e-10).log10()
    logmel = torch.maximum(logmel, logmel.max() - 8.0)
    return (logmel + 4.0) / 4.0


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)       # the HTK scale, torchaudio's MelSpectrogram default


def _warp_weights(alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    top = float(_hz_to_mel(torch.tensor(SAMPLE_RATE / 2)))
    centres = torch.linspace(0.0, top, N_MELS + 2)[1:-1]                    # each bin's centre, in mel
    hz = 700.0 * (10.0 ** (centres / 2595.0) - 1.0)
    source = (_hz_to_mel(hz / alpha) / (top / (N_MELS + 1)) - 1.0).clamp(0, N_MELS - 1)  # in bins
    lo = source.floor().long()
    return lo, (lo + 1).clamp(max=N_MELS - 1), (source - lo)[:, None]


def warp_mel(logmel: torch.Tensor, alpha: float) -> torch.Tensor:
    """(N_MELS, T) log-mel -> the same clip as a voice whose spectrum is stretched by `alpha` along the
    frequency axis (vocal tract length perturbation): bin i takes the value at f_i / alpha, read
    between bins; alpha > 1 moves formants up, as a shorter vocal tract does. Tempo and length stay."""
    if alpha == 1.0:
        return logmel
    lo, hi, w = (t.to(logmel.device) for t in _warp_weights(float(alpha)))
    return logmel[lo] * (1 - w) + logmel[hi] * w


def pad_mels(mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (N_MELS, T_i) -> (B, N_MELS, T_max) padded with each clip's minimum, and lengths (B,)."""
    lengths = torch.tensor([m.size(1) for m in mels])
    out = torch.stack([m.min().expand(m.size(0), int(lengths.max())).clone() for m in mels])
    for i, m in enumerate(mels):
        out[i, :, : m.size(1)] = m
    return out, lengths
