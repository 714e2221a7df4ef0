"""A miniature data folder in the layout of `fm-multi data build`, written in about a second.

Training and evaluation tests read it through the real loaders (fm_multi/data/loaders.py). Images
are coloured squares (one colour per class), audio is a tone per word, texts are short templates:
enough for every task's loss to fall within tens of steps.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw

from helpers import CLASSES, make_tokenizer

COLOURS = [(220, 30, 30), (30, 180, 40), (40, 60, 220), (230, 200, 20)]
WORDS = ["one", "two", "three", "four"]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _picture(rng, cls: int, size: int, box=None) -> Image.Image:
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(90, 160, 3)))
    x0, y0, x1, y1 = box or (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    ImageDraw.Draw(img).rectangle([x0, y0, x1 - 1, y1 - 1], fill=COLOURS[cls])
    return img


def _classify(root: Path, rng) -> None:
    meta = {"train": [], "val": []}
    for split, styles in (("train", ["plain"]), ("val", ["plain", "unseen"])):
        for c, name in enumerate(CLASSES):
            for n, style in enumerate(styles * 3):
                file = f"{split}/{name}/{style}_{c * 10 + n}.jpg"
                (root / file).parent.mkdir(parents=True, exist_ok=True)
                _picture(rng, c, 48).save(root / file)
                meta[split].append({"file": file, "label": name, "style": style, "background": "flat"})
    for split, rows in meta.items():
        _jsonl(root / f"meta_{split}.jsonl", rows)


def _detect(root: Path, rng, n_images: int = 6) -> None:
    for split in ("train", "val"):
        images, annotations = [], []
        for i in range(n_images):
            c, size = i % len(CLASSES), 96
            x0, y0 = (int(v) for v in rng.integers(0, 48, 2))
            w, h = (int(v) for v in rng.integers(24, 48, 2))
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            _picture(rng, c, size, (x0, y0, x0 + w, y0 + h)).save(root / split / "images" / f"{i:06d}.jpg")
            images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": size, "height": size})
            annotations.append({"id": i + 1, "image_id": i + 1, "category_id": c + 1, "bbox": [x0, y0, w, h],
                                "area": w * h, "iscrowd": 0})
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)]
        (root / split / "annotations.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}))


def _speech(root: Path, rng) -> None:
    voices = {"train": [("voice_a", False), ("voice_b", False)],
              "val": [("voice_a", False), ("voice_b", False), ("voice_c", True)]}
    for split, speakers in voices.items():
        rows = []
        for i in range(6):
            speaker, heldout = speakers[i % len(speakers)]
            words = [WORDS[int(k)] for k in rng.integers(0, 4, 3)]
            t = np.arange(int(0.25 * 16000)) / 16000
            audio = np.concatenate([0.3 * np.sin(2 * np.pi * 200 * (1 + WORDS.index(w)) * t) for w in words])
            (root / split).mkdir(parents=True, exist_ok=True)
            sf.write(root / split / f"{i:06d}.wav", audio.astype(np.float32), 16000, subtype="PCM_16")
            rows.append({"audio": f"{split}/{i:06d}.wav", "text": " ".join(words), "speaker": speaker,
                         "duration": len(words) * 0.25, "heldout_voice": heldout})
        _jsonl(root / f"{split}.jsonl", rows)


def _text(root: Path) -> None:
    for split in ("train", "val"):
        summaries = [{"document": f"The {n} is a small package. It does many things for the {n}.",
                      "summary": f"a small {n} package", "source": "test"} for n in ("fox", "dog", "apple", "car")]
        chats = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                               {"role": "assistant", "content": str(a + b)}],
                  "skill": "arithmetic", "checkable": True} for a, b in ((1, 2), (2, 3), (3, 1), (2, 2))]
        chats.append({"messages": [{"role": "user", "content": "Hello!"},
                                   {"role": "assistant", "content": "Hello! How can I help you?"}],
                      "skill": "smalltalk", "checkable": False})
        _jsonl(root / f"summarize_{split}.jsonl", summaries)
        _jsonl(root / f"chat_{split}.jsonl", chats)
    (root / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog\n", encoding="utf-8")


def make_data_dir(root) -> Path:
    root = Path(root)
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.json").write_text(json.dumps({"classify": CLASSES, "detect": CLASSES}))
    _classify(root / "classify", rng)
    _detect(root / "detect", rng)
    _speech(root / "speech", rng)
    _text(root / "text")
    (root / "tokenizer").mkdir(exist_ok=True)
    (root / "tokenizer" / "tokenizer.json").write_text(make_tokenizer().to_str(), encoding="utf-8")
    return root
