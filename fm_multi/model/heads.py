"""Task heads over the backbone's output tokens.

- LM head: the text token embedding reused as the output projection (Press & Wolf, 2017), used by
  chat and summarization; it has no weights of its own, see FMMulti.forward_text.
- Classification head: a linear layer over the CLS token.
- Detection head: dense, one prediction per image patch (in the spirit of FCOS, Tian et al., 2019):
  per-class logits trained with sigmoid focal loss and a box as distances from the patch centre to
  its four sides. Chosen over DETR-style set prediction because every patch receives a direct
  training signal from the first step; Hungarian-matched [DET] tokens need far more compute to
  converge (DETR trains for 500 epochs), which a 2-core CPU does not have.
- CTC head: per-audio-token character logits (Graves et al., 2006).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class ClassifyHead(nn.Module):
    def __init__(self, d_model: int, n_classes: int):
        super().__init__()
        self.fc = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[:, 0])  # (B, n_classes) from the CLS token


class DetectHead(nn.Module):
    def __init__(self, d_model: int, n_classes: int):
        super().__init__()
        self.cls = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, n_classes))
        self.box = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, 4))
        # Start with a low foreground probability (focal-loss prior, Lin et al., 2017).
        nn.init.constant_(self.cls[-1].bias, -4.6)

    def forward(self, x: torch.Tensor, grid_h: int, grid_w: int) -> dict[str, torch.Tensor]:
        """x: (B, 1 + h*w, D) vision tokens (CLS first).

        Returns logits (B, h*w, C) and boxes (B, h*w, 4) as normalised xyxy in [0, 1].
        """
        patches = x[:, 1:]
        ys = (torch.arange(grid_h, device=x.device) + 0.5) / grid_h
        xs = (torch.arange(grid_w, device=x.device) + 0.5) / grid_w
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx.flatten(), cy.flatten()], dim=-1)  # (h*w, 2)
        ltrb = torch.sigmoid(self.box(patches).float())  # (B, h*w, 4) distances, image fractions
        boxes = torch.cat([centres - ltrb[..., :2], centres + ltrb[..., 2:]], dim=-1).clamp(0, 1)
        return {"logits": self.cls(patches), "boxes": boxes, "centres": centres}


class CTCHead(nn.Module):
    def __init__(self, d_model: int, n_symbols: int):
        super().__init__()
        self.fc = nn.Linear(d_model, n_symbols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)  # (B, T', n_symbols), index 0 = blank
