"""Confidence calibration: temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural
Networks") and the expected calibration error with its reliability diagram.

- Classification: one temperature T divides the class logits before the softmax; T minimises the
  negative log-likelihood of the validation labels (LBFGS on log T, so T stays positive).
- Detection: a box's score is read as "the probability that this box is right", so T is fitted on
  the boxes themselves: every box decoded at evaluate.DETECT_THRESHOLD is matched greedily, best
  score first, to an unclaimed ground-truth box of its class with IoU >= 0.5 (the rule behind
  mAP@0.5); matched boxes are positives, the rest negatives, and T divides the box's logit before
  the sigmoid. Chosen over per-patch focal targets because users see boxes, not patches.
- ECE (15 equal-width bins): sum over bins of |bin| / n * |accuracy(bin) - mean confidence(bin)|.

Temperatures are fitted and reported on the same validation examples, so "after" numbers are
cross-fitted: the examples are split into two halves by position, each half is scaled with the
temperature fitted on the other, and ECE/NLL are measured on the union. The temperature stored in
the checkpoint (config.json "calibration") is the one fitted on all of them.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from fm_multi import evaluate, streams
from fm_multi.checkpoint import CheckpointError, write_atomic
from fm_multi.tasks import classify as classify_task
from fm_multi.tasks import detect as detect_task

N_BINS = 15
MATCH_IOU = 0.5
CALIBRATION_KEY = "calibration"


# --- fitting --------------------------------------------------------------------------------------
def _fit(loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """argmin over T > 0 of loss_fn(T), by LBFGS on log T starting from T = 1."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(log_t.exp())
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))  # a guard for degenerate (one-class) sets


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Multi-class: logits (N, C), labels (N,) -> T minimising cross-entropy(logits / T, labels)."""
    logits, labels = logits.detach().float(), labels.long()
    return _fit(lambda t: F.cross_entropy(logits / t, labels))


def fit_binary_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Binary: logits (N,), targets (N,) in {0, 1} -> T minimising BCE(sigmoid(logits / T), targets)."""
    logits, targets = logits.detach().float(), targets.float()
    return _fit(lambda t: F.binary_cross_entropy_with_logits(logits / t, targets))


# --- measuring ------------------------------------------------------------------------------------
def reliability(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = N_BINS) -> dict:
    """confidence (N,) in [0, 1], correct (N,) bool -> {"ece", "bins": [{lo, hi, n, confidence, accuracy}]}.

    Bin m holds confidences in (m / n_bins, (m + 1) / n_bins]; a confidence of exactly 0 joins bin 0.
    """
    confidence, correct = confidence.float().flatten(), correct.float().flatten()
    edges = torch.linspace(0, 1, n_bins + 1)
    which = torch.bucketize(confidence, edges[1:-1], right=False)  # (N,) bin index
    bins, ece, n = [], 0.0, max(confidence.numel(), 1)
    for m in range(n_bins):
        inside = which == m
        count = int(inside.sum())
        entry = {"lo": float(edges[m]), "hi": float(edges[m + 1]), "n": count, "confidence": None,
                 "accuracy": None}
        if count:
            conf, acc = float(confidence[inside].mean()), float(correct[inside].mean())
            entry.update(confidence=conf, accuracy=acc)
            ece += count / n * abs(acc - conf)
        bins.append(entry)
    return {"ece": ece, "bins": bins}


def _halves(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.arange(n)
    return idx[idx % 2 == 0], idx[idx % 2 == 1]


def cross_fitted_temperatures(logits: torch.Tensor, targets: torch.Tensor, fit: Callable) -> torch.Tensor:
    """(N,) temperature per example, each fitted on the other half of the examples."""
    temps = torch.ones(logits.size(0))
    a, b = _halves(logits.size(0))
    if len(a) and len(b):
        temps[a] = fit(logits[b], targets[b])
        temps[b] = fit(logits[a], targets[a])
    return temps


def _summary(kind: str, logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> dict:
    """Before/after ECE, NLL and reliability bins for classify (kind="multi") or detect ("binary")."""
    out = {"temperature": temperature, "n": int(logits.size(0))}
    if not out["n"]:  # e.g. a detector that scores no box above the decoding threshold
        return {**out, "before": None, "after": None}
    fit = fit_temperature if kind == "multi" else fit_binary_temperature
    crossed = cross_fitted_temperatures(logits, targets, fit)
    for name, t in (("before", torch.ones_like(crossed)), ("after", crossed)):
        scaled = logits / (t[:, None] if kind == "multi" else t)
        if kind == "multi":
            probs = scaled.softmax(-1)
            conf, pred = probs.max(-1)
            correct, nll = pred == targets, F.cross_entropy(scaled, targets)
        else:
            conf, correct = scaled.sigmoid(), targets.bool()
            nll = F.binary_cross_entropy_with_logits(scaled, targets.float())
        rel = reliability(conf, correct)
        out[name] = {"ece": rel["ece"], "nll": float(nll), "bins": rel["bins"]}
    return out


# --- collecting validation scores -----------------------------------------------------------------
@torch.no_grad()
def classify_logits(model, data, indices, collate, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (N, C) logits as tasks.classify.predict serves them (before any temperature) and (N,) labels
    of the chosen val pictures."""
    device = next(model.parameters()).device
    logits, labels = [], []
    for _, examples in evaluate._batches(data, indices, batch_size):
        batch = streams.to_device(collate(examples), device)
        logits.append(classify_task.predict(model, batch["pixels"], batch["centre"]).cpu())
        labels.append(batch["labels"].cpu())
    return torch.cat(logits), torch.cat(labels)


def match_boxes(dets: list[dict], gt_boxes: torch.Tensor, gt_labels: list[str]) -> list[bool]:
    """Greedy, best score first: a box is right when it claims a free same-class box with IoU >= 0.5."""
    free = [True] * len(gt_labels)
    ious = box_iou(torch.tensor([d["box"] for d in dets]).reshape(-1, 4), gt_boxes.reshape(-1, 4).float())
    hits = []
    for i in sorted(range(len(dets)), key=lambda k: -dets[k]["score"]):
        cand = [(float(ious[i, j]), j) for j in range(len(gt_labels))
                if free[j] and gt_labels[j] == dets[i]["label"] and ious[i, j] >= MATCH_IOU]
        if cand:
            free[max(cand)[1]] = False
        hits.append((i, bool(cand)))
    return [h for _, h in sorted(hits)]


@torch.no_grad()
def detect_logits(model, data, indices, collate, batch_size: int, labels: list[str]):
    """-> (M,) raw logits of every box decoded at evaluate.DETECT_THRESHOLD and (M,) 0/1 matched."""
    device = next(model.parameters()).device
    logits, targets = [], []
    for chunk, examples in evaluate._batches(data, indices, batch_size):
        out = detect_task.predict(model, streams.to_device(collate(examples), device)["pixels"])
        for k, (j, (_, target)) in enumerate(zip(chunk, examples)):
            w, h = data.images[j]["size"]
            dets = detect_task.decode(out, k, w, h, labels, evaluate.DETECT_THRESHOLD, with_patch=True)
            gt_labels = [labels[int(c)] for c in target["labels"]]
            targets += match_boxes(dets, target["boxes"], gt_labels)
            logits += [float(out["logits"][k, d["patch"], labels.index(d["label"])]) for d in dets]
    return torch.tensor(logits), torch.tensor(targets, dtype=torch.float32)


def measure(model, codec, data_dir, limit: int | dict | None, batch_size: int, labels: dict) -> dict:
    """Fit and report temperatures for classify and detect on data_dir's val split."""
    results = {}
    for task in ("classify", "detect"):
        data = streams.dataset(task, data_dir, "val")
        idx = evaluate._indices(data, limit, task)
        collate = streams.collate_fn(task, codec, model.config, inference=True)
        if task == "classify":
            logits, targets = classify_logits(model, data, idx, collate, batch_size)
            results[task] = _summary("multi", logits, targets, fit_temperature(logits, targets))
        else:
            logits, targets = detect_logits(model, data, idx, collate, batch_size, labels["detect"])
            t = fit_binary_temperature(logits, targets) if logits.numel() else 1.0
            results[task] = _summary("binary", logits, targets, t)
            results[task]["positives"] = int(targets.sum())
    return results


# --- the checkpoint's config.json -----------------------------------------------------------------
def temperatures(results: dict) -> dict[str, float]:
    """measure()'s report -> {task: temperature} for the tasks it had examples of."""
    return {task: r["temperature"] for task, r in results.items() if r["n"]}


def load_temperatures(folder) -> dict[str, float]:
    """{"classify": T, "detect": T} from config.json, or {} for an uncalibrated checkpoint."""
    path = Path(folder) / "config.json"
    if not path.exists():
        return {}
    temps = json.loads(path.read_text(encoding="utf-8")).get(CALIBRATION_KEY) or {}
    if not isinstance(temps, dict) or not all(isinstance(t, (int, float)) and t > 0 for t in temps.values()):
        raise CheckpointError(f"{path}: {CALIBRATION_KEY!r} must map task names to positive temperatures")
    return {k: float(v) for k, v in temps.items()}


def save_temperatures(folder, temps: dict[str, float]) -> None:
    """Write temps into config.json under "calibration", keeping every other key as it was."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config[CALIBRATION_KEY] = {k: round(float(v), 6) for k, v in temps.items()}
    write_atomic(path, json.dumps(config, indent=2).encode())
