"""Explanations: why the model answered as it did.

- Images: gradient x input saliency over patch tokens (Simonyan et al., 2014; Shrikumar et al., 2016),
  for the top class or for one detected box's score, as an (h, w) map normalised to [0, 1].
  Chosen over attention rollout because fused SDPA never materialises attention weights.
- Speech: the CTC alignment grouped into words, each with the mean and minimum probability of
  the characters that spelled it.
- Text: per-token probabilities come from generation itself (Pipeline.*_detailed) or from one
  teacher-forced pass over a finished reply (Pipeline.chat_token_probs); `low_confidence` marks
  tokens below a threshold, `token_highlights` / `word_highlights` shape both for display.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from fm_multi.model.encoders import VISION

LOW_PROBABILITY = 0.3  # a generated token below this is highlighted as unlikely


def _saliency(model, pixels: torch.Tensor, score_fn) -> torch.Tensor:
    """(1, 3, H, W) pixels -> (h, w) map of |grad . token| over patch tokens, in [0, 1]."""
    v = model.vision
    p = v.patch_size
    h, w = pixels.size(2) // p, pixels.size(3) // p
    with torch.enable_grad():
        patches = v.to_patches(pixels).detach().requires_grad_(True)           # (1, h*w, D)
        x = patches + v.grid_positions(h, w)
        x = torch.cat([v.cls + v.cls_pos, x], dim=1) + model.modality[VISION]
        out = model.backbone(x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
        score = score_fn(out, h, w)
        (grad,) = torch.autograd.grad(score, patches)
    sal = (grad * patches).sum(-1).abs()[0].view(h, w)                          # (h, w)
    return (sal / sal.max().clamp_min(1e-12)).detach()


def classify_saliency(model, pixels: torch.Tensor, class_index: int) -> torch.Tensor:
    """Saliency of one class logit; pixels (1, 3, H, W) -> (h, w) in [0, 1]."""
    return _saliency(model, pixels, lambda out, h, w: model.classify_head(out)[0, class_index])


def detect_saliency(model, pixels: torch.Tensor, patch_index: int, class_index: int) -> torch.Tensor:
    """Saliency of one patch's detection score (the patch that produced a box) -> (h, w) in [0, 1]."""
    return _saliency(model, pixels,
                     lambda out, h, w: model.detect_head(out, h, w)["logits"][0, patch_index, class_index])


def heatmap_overlay(image: Image.Image, saliency: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """Blend a red heat map of `saliency` (h, w) over an RGB image of any size."""
    W, H = image.size
    sal = F.interpolate(saliency[None, None].float(), size=(H, W), mode="bilinear", align_corners=False)[0, 0]
    heat = np.zeros((H, W, 3), dtype=np.float32)
    heat[..., 0] = sal.numpy()
    heat[..., 1] = sal.numpy() * 0.3
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    mix = base * (1 - alpha * sal.numpy()[..., None]) + heat * alpha
    return Image.fromarray((mix.clip(0, 1) * 255).astype(np.uint8))


def draw_box(image: Image.Image, box: list[float], colour=(0, 200, 255)) -> Image.Image:
    """Outline box [x0, y0, x1, y1] (image pixels) on the image, so a per-box map shows its box."""
    ImageDraw.Draw(image).rectangle(box, outline=colour, width=max(1, min(image.size) // 128))
    return image


def word_confidences(alignment: list[dict]) -> list[dict]:
    """CTC alignment [{"char", "frame", "prob"}] -> [{"word", "start_frame", "end_frame", "mean", "min"}]."""
    words, current = [], []
    for a in alignment + [{"char": " ", "frame": -1, "prob": 1.0}]:
        if a["char"] == " ":
            if current:
                probs = [c["prob"] for c in current]
                words.append({"word": "".join(c["char"] for c in current), "start_frame": current[0]["frame"],
                              "end_frame": current[-1]["frame"], "mean": float(np.mean(probs)),
                              "min": float(min(probs))})
            current = []
        else:
            current.append(a)
    return words


def low_confidence(token_probs: list[tuple[str, float]], threshold: float = LOW_PROBABILITY) -> list[tuple[str, bool]]:
    """[(token text, probability)] -> [(token text, is_low)] for highlighting."""
    return [(tok, p < threshold) for tok, p in token_probs]


def token_highlights(token_probs: list[tuple[str, float]],
                     threshold: float = LOW_PROBABILITY) -> list[tuple[str, float | None]]:
    """[(token text, probability)] -> [(token text, doubt or None)] for gr.HighlightedText.

    doubt = 1 - probability, given only to tokens below `threshold`: HighlightedText paints a number
    in [0, 1] as red of that strength, so the least likely tokens stand out and the rest stay plain.
    """
    return [(tok, round(1 - p, 3) if low else None) for (tok, p), (_, low) in
            zip(token_probs, low_confidence(token_probs, threshold))]


def word_highlights(words: list[dict]) -> list[tuple[str, float]]:
    """word_confidences() -> [("word ", 1 - mean probability)]: every word, redder when less sure."""
    return [(w["word"] + " ", round(1 - w["mean"], 3)) for w in words]
