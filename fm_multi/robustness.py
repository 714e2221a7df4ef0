"""Robustness: how the metrics of `fm-multi eval` fall as inputs get worse.

In the spirit of ImageNet-C (Hendrycks & Dietterich, 2019): each corruption has a few severities,
and the first is the clean input or close to it. Pictures get Gaussian pixel noise, Gaussian blur
and JPEG re-encoding; speech gets white noise at a signal-to-noise ratio and a change of speaking
rate by resampling (tape-style: pitch moves with speed, as sox `speed` does).

The measurements reuse evaluate.eval_classify / eval_detect / eval_transcribe on a wrapped val set,
so a point is measured exactly as `fm-multi eval` measures the clean set. Noise is seeded by the
example's index, so a rerun gives the same curves.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageFilter

from fm_multi import evaluate, streams
from fm_multi.preprocess import SAMPLE_RATE

# Severity lists. Each holds its corruption's identity (CLEAN; None = untouched), whose point is the
# clean measurement: taken from `fm-multi eval`'s result when given, so it is not measured twice.
IMAGE_CORRUPTIONS = {
    "gaussian_noise": [0.0, 0.05, 0.1, 0.2],            # pixel noise std, as a fraction of full range
    "blur": [0.0, 1.0, 2.0, 4.0],                       # Gaussian blur radius, pixels of the stored image
    "jpeg_quality": [None, 30, 15, 5],                  # re-encoded at this JPEG quality
}
AUDIO_CORRUPTIONS = {
    "snr_db": [None, 20, 10, 0],                        # white noise at this signal-to-noise ratio
    "speaking_rate": [0.75, 0.9, 1.0, 1.1, 1.25],       # playback speed factor
}
CLEAN = {"gaussian_noise": 0.0, "blur": 0.0, "jpeg_quality": None, "snr_db": None, "speaking_rate": 1.0}
METRIC = {"classify": "top1", "detect": "map_50", "transcribe": "cer"}
NAMES = {"gaussian_noise": "pixel noise (std)", "blur": "blur (radius, px)", "jpeg_quality": "JPEG quality",
         "snr_db": "white noise (SNR, dB)", "speaking_rate": "speaking rate (x)"}


# --- corruptions ----------------------------------------------------------------------------------
def gaussian_noise(img: Image.Image, std: float, rng: np.random.Generator) -> Image.Image:
    if not std:
        return img
    x = np.asarray(img, dtype=np.float32) + rng.normal(0.0, std * 255.0, size=(img.height, img.width, 3))
    return Image.fromarray(x.clip(0, 255).astype(np.uint8))


def blur(img: Image.Image, radius: float, rng=None) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius)) if radius else img


def jpeg(img: Image.Image, quality: int | None, rng=None) -> Image.Image:
    if quality is None:
        return img
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def add_noise(audio: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    """White noise scaled so that signal power / noise power = 10^(snr_db / 10)."""
    if snr_db is None:
        return audio
    power = float(np.mean(audio.astype(np.float64) ** 2)) or 1e-10
    noise = rng.standard_normal(audio.shape) * np.sqrt(power / 10 ** (snr_db / 10))
    return (audio + noise).astype(np.float32)


def change_rate(audio: np.ndarray, rate: float, rng=None) -> np.ndarray:
    """Speed up (rate > 1) or slow down by resampling: len(audio) / rate samples at the same rate."""
    if rate == 1.0:
        return audio
    import torchaudio.functional as AF

    wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    return AF.resample(wave, int(round(SAMPLE_RATE * rate)), SAMPLE_RATE).numpy()


CORRUPT = {"gaussian_noise": gaussian_noise, "blur": blur, "jpeg_quality": jpeg,
           "snr_db": add_noise, "speaking_rate": change_rate}


class Corrupted:
    """A val dataset whose images (or audio) pass through one corruption; every other attribute
    (styles, images, rows, ...) is the wrapped dataset's, so evaluate.eval_* read it unchanged."""

    def __init__(self, data, corruption: str, severity):
        self.data, self.fn, self.severity = data, CORRUPT[corruption], severity

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        item, rng = self.data[i], np.random.default_rng(i)
        if isinstance(item, dict):  # speech: {"audio", "text", ...}
            return {**item, "audio": self.fn(item["audio"], self.severity, rng)}
        image, target = item
        return self.fn(image, self.severity, rng), target

    def __getattr__(self, name: str):
        if name == "data":  # not set yet (e.g. while unpickling): avoid recursing
            raise AttributeError(name)
        return getattr(self.data, name)


# --- curves ---------------------------------------------------------------------------------------
def _evaluate(task: str, model, data, indices, collate, batch_size: int, labels: dict, speech_lm=None) -> dict:
    if task == "classify":
        return evaluate.eval_classify(model, data, indices, collate, batch_size, trained_styles=set())
    if task == "detect":
        return evaluate.eval_detect(model, data, indices, collate, batch_size,
                                    data.root / "val" / "annotations.json", labels["detect"], slices=False)
    return evaluate.eval_transcribe(model, data, indices, collate, batch_size, speech_lm)


def curves(task: str, model, codec, data_dir, limit: int | dict | None, batch_size: int, labels: dict,
           clean: dict | None = None, speech_lm=None) -> dict:
    """{corruption: [{"severity", metric, "n"}]} for one of classify / detect / transcribe.

    clean: the task's "all" result from evaluate on the same examples, reused for the clean points.
    """
    data = streams.dataset(task, data_dir, "val")
    indices = evaluate._indices(data, limit, task)
    collate = streams.collate_fn(task, codec, model.config, inference=True)
    table = AUDIO_CORRUPTIONS if task == "transcribe" else IMAGE_CORRUPTIONS
    metric, out = METRIC[task], {}
    for corruption, severities in table.items():
        out[corruption] = []
        for severity in severities:
            if severity == CLEAN[corruption] and clean is None:
                clean = _evaluate(task, model, data, indices, collate, batch_size, labels, speech_lm)["all"]
            res = clean if severity == CLEAN[corruption] else _evaluate(
                task, model, Corrupted(data, corruption, severity), indices, collate, batch_size, labels,
                speech_lm)["all"]
            out[corruption].append({"severity": severity, metric: res[metric], "n": res["n"]})
    return out
