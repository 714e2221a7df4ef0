"""Image classification: batching, cross-entropy, inference logits, top-k."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fm_multi.preprocess import image_to_tensor


def collate(examples: list[tuple], image_size: int) -> dict:
    """[(PIL image, class index)] -> pixels (B, 3, S, S), labels (B,)."""
    pixels = torch.stack([image_to_tensor(img, image_size) for img, _ in examples])
    return {"pixels": pixels, "labels": torch.tensor([y for _, y in examples], dtype=torch.long)}


def loss(model, batch) -> tuple[torch.Tensor, dict]:
    logits = model("classify", pixels=batch["pixels"]).float()
    loss = F.cross_entropy(logits, batch["labels"])
    acc = (logits.argmax(-1) == batch["labels"]).float().mean()
    return loss, {"loss": loss.detach(), "acc": acc}


def predict(model, pixels: torch.Tensor) -> torch.Tensor:
    """pixels (B, 3, S, S) -> inference logits (B, C): the mean of the logits of each picture and of its
    mirror image, in one batch. Training flips half its pictures (streams.augment_classify), so both
    views show the same class; the second view is worth most of a point of top-1 at twice the compute."""
    both = model.forward_classify(torch.cat([pixels, pixels.flip(-1)])).float()
    return both.view(2, pixels.size(0), -1).mean(0)


def top_k(logits: torch.Tensor, labels: list[str], k: int = 5) -> list[list[tuple[str, float]]]:
    """(B, C) logits -> per image the k most probable (label, probability) pairs."""
    probs = logits.float().softmax(-1)
    p, i = probs.topk(min(k, probs.size(-1)), dim=-1)
    return [[(labels[j], float(q)) for q, j in zip(pr.tolist(), ir.tolist())] for pr, ir in zip(p, i)]
