"""Image classification forward: our encoder + backbone + head against timm's VisionTransformer.

The peer is built with our dimensions (image size, patch size, width, depth, heads, MLP ratio, a
class token, the same number of classes, exact GELU, fused SDPA attention), random weights; both run
in eval mode under inference_mode, fp32, with the same thread count, on the same pixels.
"""
from __future__ import annotations

import torch

from fm_multi.bench.timing import Budget, interleaved, median, row
from fm_multi.config import ModelConfig

BATCHES = (1, 32)


def timm_vit(cfg: ModelConfig) -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.d_model,
                             depth=cfg.n_layer, num_heads=cfg.n_head, mlp_ratio=cfg.mlp_ratio,
                             class_token=True, num_classes=cfg.n_classify, global_pool="token")


def our_vision_parameters(model) -> int:
    """Parameters the classification path touches (the peer has no text or audio parts)."""
    parts = (model.vision, model.backbone, model.classify_head)
    return sum(p.numel() for m in parts for p in m.parameters()) + model.modality.shape[1]


def run(pipe, budget: Budget) -> list[dict]:
    model, cfg, device = pipe.model, pipe.config, pipe.device
    peer = timm_vit(cfg).to(device).eval()
    n_ours = our_vision_parameters(model)
    n_peer = sum(p.numel() for p in peer.parameters())
    rows = []
    for batch in BATCHES:
        x = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=device)
        with torch.inference_mode():
            t = interleaved({"ours": lambda: model.forward_classify(x), "peer": lambda: peer(x)}, budget)
        rows.append(row(f"classify forward b{batch} vs timm ViT", 1e3 * median(t["ours"]), "ms",
                        peer=1e3 * median(t["peer"]), target=("speedup", ">=", 1.0),
                        note=f"{cfg.image_size}px/{cfg.patch_size}, d{cfg.d_model} L{cfg.n_layer}; "
                             f"params {n_ours / 1e6:.2f}M vs {n_peer / 1e6:.2f}M; {len(t['ours'])} rounds"))
    return rows
