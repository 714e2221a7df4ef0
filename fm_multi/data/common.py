"""Small helpers every builder shares: seeding, split hashing, parallel maps and JSONL files.

Determinism rule for the whole package: every random choice comes from a generator seeded by
(build seed, part, item index), never from a shared stream, so the bytes of an item do not depend
on how many workers ran or in which order they finished.
"""

import hashlib
import json
import multiprocessing
import sys
from pathlib import Path
from typing import Callable, Iterable

import numpy as np


def item_rng(seed: int, part: int, *index: int) -> np.random.Generator:
    """A generator private to one item of one part of a build."""
    return np.random.default_rng([seed, part, *index])


def stable_hash(text: str) -> int:
    """A hash that, unlike hash(), is the same in every process and Python run."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


def is_val(key: str, val_percent: int = 5) -> bool:
    """Deterministic train/val assignment of a group key (package name, man page, word)."""
    return stable_hash(key) % 100 < val_percent


def parallel_map(fn: Callable, items: list, workers: int, desc: str, chunksize: int = 8) -> list:
    """[fn(x) for x in items] over `workers` processes, in order, with a progress bar."""
    from tqdm import tqdm
    # In a log file (not a terminal) every redraw is kept, so redraw rarely there.
    bar = {"desc": desc, "total": len(items), "leave": False, "mininterval": 0.1 if sys.stderr.isatty() else 30}
    if workers <= 1 or len(items) <= chunksize:
        return [fn(x) for x in tqdm(items, **bar)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return list(tqdm(pool.imap(fn, items, chunksize=chunksize), **bar))


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write one compact JSON object per line (UTF-8, keys in insertion order); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_card(path: Path, title: str, sections: dict[str, str]) -> None:
    """A DATASET_CARD.md: a title and a few "## heading" sections of markdown."""
    body = [f"# {title}", ""]
    for heading, text in sections.items():
        body += [f"## {heading}", "", text.strip(), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(body), encoding="utf-8")


def truncate_words(text: str, n: int) -> str:
    """The first n words of text (whitespace collapsed)."""
    return " ".join(text.split()[:n])
