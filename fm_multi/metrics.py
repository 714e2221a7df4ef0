"""Evaluation metrics, written out so their definitions are visible and need no extra packages.

- ROUGE-L F1 (Lin, 2004): longest common subsequence of lower-cased word tokens, F1 of the
  LCS-based precision and recall (beta = 1, as rouge-score reports `fmeasure`).
- Character and word error rates: Levenshtein distance summed over a corpus, divided by the
  summed reference length (so long clips weigh more, as jiwer computes it).
- Top-k accuracy, exact match after answer normalisation, and the lead baselines for summaries.
- Detection mAP through pycocotools' COCOeval (the reference implementation), overall and per
  class, image background and object style (`coco_slices`).
"""
from __future__ import annotations

import contextlib
import io
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

WORD = re.compile(r"[a-z0-9]+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# --- sequences ------------------------------------------------------------------------------
def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence; O(len(a) * len(b)) time, O(len(b)) memory."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i]
        for j, h in enumerate(hyp, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


# --- text -----------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 between two strings; 0 when either has no words."""
    p, r = words(prediction), words(reference)
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def lead_sentence(document: str) -> str:
    """The first sentence of a document: the classic "lead" summarisation baseline."""
    return SENTENCE_END.split(document.strip(), maxsplit=1)[0]


def lead_words(document: str, n: int) -> str:
    return " ".join(document.split()[:n])


def error_rate(references: list[str], hypotheses: list[str], unit: str) -> float:
    """Corpus CER (unit="char") or WER (unit="word"): total edits / total reference length."""
    split = (lambda s: list(" ".join(s.split()))) if unit == "char" else (lambda s: s.split())
    edits = sum(edit_distance(split(r), split(h)) for r, h in zip(references, hypotheses))
    length = sum(len(split(r)) for r in references)
    return edits / max(length, 1)


def normalize_answer(text: str) -> str:
    """Lower case, collapsed spaces, no trailing full stop: "Five ." == "five"."""
    text = " ".join(text.lower().split())
    return re.sub(r"\s*[.!]+$", "", text).strip()


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of the word n-grams of `text` that repeat an earlier one: 0 for an answer that never
    repeats itself, near 1 for one stuck in a loop ("the the the ...")."""
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if len(grams) > 1 else 0.0


# --- classification -------------------------------------------------------------------------
def top_k_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C) logits, (B,) labels -> (B,) bool: the label is among the k highest logits."""
    top = logits.topk(min(k, logits.size(-1)), dim=-1).indices
    return (top == labels[:, None]).any(dim=-1)


# --- detection ------------------------------------------------------------------------------
def load_coco(annotation_file: str | Path) -> dict:
    """A COCO annotation file as the dict the detection metrics below take (read it once)."""
    return json.loads(Path(annotation_file).read_text(encoding="utf-8"))


def coco_map(dataset: dict, detections: list[dict], image_ids: list[int]) -> dict:
    """COCOeval bbox on `image_ids` of the COCO ground truth `dataset` -> {"map_50_95", "map_50"}.

    detections are COCO results: {"image_id", "category_id", "bbox": [x, y, w, h], "score"}.
    """
    if not detections:
        return {"map_50_95": 0.0, "map_50": 0.0}
    return _map(_coco_eval(_coco_from(dataset), detections, image_ids))


def coco_map_any_class(dataset: dict, detections: list[dict], image_ids: list[int]) -> dict:
    """coco_map with every class merged into one: how well the boxes alone are placed (a box with the
    wrong label still counts), which tells localisation errors from labelling errors."""
    if not detections:
        return {"map_50_95": 0.0, "map_50": 0.0}
    dataset = {**dataset, "categories": [{"id": 1, "name": "object"}],
               "annotations": [{**a, "category_id": 1} for a in dataset["annotations"]]}
    return _map(_coco_eval(_coco_from(dataset), [{**d, "category_id": 1} for d in detections], image_ids))


def _coco_eval(gt, detections: list[dict], image_ids: list[int]):
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(detections), iouType="bbox")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _map(ev) -> dict:
    # stats[0] is AP@[.5:.95], stats[1] AP@.5; -1 means no ground truth at all
    return {"map_50_95": max(float(ev.stats[0]), 0.0), "map_50": max(float(ev.stats[1]), 0.0)}


def _coco_from(dataset: dict):
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        gt.createIndex()
    return gt


def coco_slices(dataset: dict, detections: list[dict], image_ids: list[int]) -> dict:
    """Detection quality overall ("all": coco_map's figures, from the same COCOeval run), per class
    (AP@0.5), per image background and per object style (mAP).

    A style's mAP treats the other styles' objects as crowd regions (iscrowd=1), so a box on them
    counts neither as a hit nor as a false alarm. Images or objects without the key are skipped.
    """
    if not detections:
        return {}
    chosen = set(image_ids)
    images = [im for im in dataset["images"] if im["id"] in chosen]
    anns = [a for a in dataset["annotations"] if a["image_id"] in chosen]
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    ev = _coco_eval(_coco_from(dataset), detections, image_ids)
    counts = Counter(a["category_id"] for a in anns)
    # precision: (IoU thresholds, recall points, classes, areas, max detections); [0, :, k, 0, -1]
    # is AP@0.5 over all areas with 100 detections, as stats[1] averages it
    by_class = {}
    for k, cat in enumerate(ev.params.catIds):
        p = ev.eval["precision"][0, :, k, 0, -1]
        if counts[cat]:
            by_class[names[cat]] = {"n": counts[cat], "ap_50": float(p[p > -1].mean()) if (p > -1).any() else 0.0}
    out = {"all": _map(ev), "by_class": dict(sorted(by_class.items()))}
    backgrounds = sorted({im["background"] for im in images if "background" in im})
    out["by_background"] = {}
    for bg in backgrounds:
        ids = [im["id"] for im in images if im.get("background") == bg]
        out["by_background"][bg] = {"n": len(ids), **_map(_coco_eval(ev.cocoGt, detections, ids))}
    styles = sorted({a["style"] for a in anns if "style" in a})
    out["by_style"] = {}
    for style in styles:
        crowd = [{**a, "iscrowd": int(a.get("style") != style)} for a in dataset["annotations"]]
        gt = _coco_from({**dataset, "annotations": crowd})
        n = sum(a.get("style") == style for a in anns)
        out["by_style"][style] = {"n": n, **_map(_coco_eval(gt, detections, image_ids))}
    return out
