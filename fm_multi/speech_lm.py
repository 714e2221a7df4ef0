"""A character n-gram language model for speech-to-text's beam search.

The CTC head hears letters; it does not know which spellings are words. Beam search
(tasks/transcribe.py: beam_decode) adds this model's log-probability of each next letter, so that
"the senater" loses to "the senator" when the sound leaves them close. Counts of every context of up
to `order - 1` letters, Witten-Bell interpolation down to a uniform distribution: a context seen
often with few different followers trusts its own counts, a rare or varied one leans on the shorter
context. The model is a gzipped JSON file of counts beside the weights (checkpoint.SPEECH_LM), fitted
on the speech set's training transcripts by `fm-multi speech-lm`.
"""
from __future__ import annotations

import functools
import gzip
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from fm_multi.checkpoint import SPEECH_LM, CheckpointError, write_atomic
from fm_multi.config import CTC_ALPHABET

START, END = "^", "$"  # padding before a transcript; the symbol that ends one
SYMBOLS = len(CTC_ALPHABET)  # the letters, space and apostrophe (CTC_ALPHABET less its blank) + END


class CharLM:
    def __init__(self, order: int, counts: dict[str, dict[str, int]]):
        if order < 1:
            raise ValueError(f"a character n-gram needs order >= 1, got {order}")
        self.order = order
        self.counts = counts  # context (0 to order-1 letters) -> {next symbol: count}
        self.totals = {h: (sum(c.values()), len(c)) for h, c in counts.items()}  # (tokens, distinct followers)
        self._cached = functools.lru_cache(maxsize=1 << 18)(self._logp)

    @classmethod
    def fit(cls, texts: Iterable[str], order: int = 6) -> CharLM:
        """Count every symbol of each transcript (and its END) after each of its contexts."""
        counts = defaultdict(Counter)
        for text in texts:
            s = START * (order - 1) + text + END
            for i in range(order - 1, len(s)):
                for n in range(order):
                    counts[s[i - n:i]][s[i]] += 1
        return cls(order, {h: dict(c) for h, c in counts.items()})

    def logp(self, history: str, symbol: str) -> float:
        """log P(symbol | the text so far), symbol a letter, space, apostrophe or END."""
        return self._cached((START * (self.order - 1) + history)[len(history):], symbol)  # last order-1 symbols

    def _logp(self, history: str, symbol: str) -> float:
        p = 1.0 / SYMBOLS
        for n in range(self.order):  # shortest context first; each longer one interpolates with it
            h = history[len(history) - n:] if n else ""
            if h not in self.totals:
                break
            tokens, types = self.totals[h]
            p = (self.counts[h].get(symbol, 0) + types * p) / (tokens + types)
        return math.log(p)

    def to_bytes(self) -> bytes:
        """The file's contents: gzipped JSON, the same bytes for the same counts."""
        data = json.dumps({"order": self.order, "counts": self.counts}, separators=(",", ":"))
        return gzip.compress(data.encode(), compresslevel=9, mtime=0)

    def save(self, path: str | Path) -> Path:
        """Write to_bytes() atomically (a run killed mid-write leaves the previous file or none)."""
        path = Path(path)
        write_atomic(path, self.to_bytes())
        return path

    @classmethod
    def from_checkpoint(cls, folder: str | Path) -> CharLM | None:
        """A checkpoint folder's model, or None when it has none; a damaged file raises CheckpointError."""
        path = Path(folder) / SPEECH_LM
        try:
            return cls.load(path) if path.exists() else None
        except ValueError as e:
            raise CheckpointError(str(e)) from None

    @classmethod
    def load(cls, path: str | Path) -> CharLM:
        try:
            data = json.loads(gzip.decompress(Path(path).read_bytes()))
            return cls(int(data["order"]), data["counts"])
        except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a speech language model ({type(e).__name__}: {e})") from None


def fit_from_data(data_dir: str | Path, order: int = 6) -> tuple[CharLM, int]:
    """Fit on the training transcripts of a built data set -> (model, number of transcripts)."""
    from fm_multi.tasks.transcribe import normalize_for_ctc

    path = Path(data_dir) / "speech" / "train.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: build the data first (fm-multi data build)")
    with open(path, encoding="utf-8") as f:
        texts = [normalize_for_ctc(json.loads(line)["text"]) for line in f if line.strip()]
    return CharLM.fit(texts, order), len(texts)


def main(args) -> int:
    folder = Path(args.checkpoint)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} is not a checkpoint folder (no config.json)")
    lm, n = fit_from_data(args.data, args.order)
    path = lm.save(folder / SPEECH_LM)
    print(f"wrote {path}: order {lm.order}, {len(lm.counts):,} contexts from {n:,} transcripts, "
          f"{path.stat().st_size / 1e6:.2f} MB")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("speech-lm", help="fit the character language model that speech-to-text's beam search "
                                         "uses, from a data set's training transcripts, into a checkpoint folder")
    p.add_argument("--data", required=True, help="built data folder (fm-multi data build)")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder to write speech_lm.json.gz into")
    p.add_argument("--order", type=int, default=6, help="n-gram order in characters (default: 6)")
    p.set_defaults(func=main)
