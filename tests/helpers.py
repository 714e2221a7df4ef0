"""Shared test helpers: a tiny tokenizer, model and checkpoint built in well under a second."""
from __future__ import annotations

import torch

from fm_multi.checkpoint import save_checkpoint
from fm_multi.config import preset
from fm_multi.model import FMMulti

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "what is two plus three? five.",
    "summarize this package description in one line",
    "a dog face and a red apple sit on a table",
] * 20
CLASSES = ["dog face", "red apple", "automobile", "rocket"]


def make_tokenizer(vocab_size: int = 300):
    from fm_multi.data.tokenizer import train_tokenizer

    return train_tokenizer(TEXTS, vocab_size)


def make_model(tokenizer, seed: int = 0, **overrides) -> FMMulti:
    torch.manual_seed(seed)
    cfg = preset("tiny", vocab_size=tokenizer.get_vocab_size(), n_classify=len(CLASSES),
                 n_detect=len(CLASSES), **overrides)
    return FMMulti(cfg)


def make_checkpoint(folder, seed: int = 0):
    tok = make_tokenizer()
    model = make_model(tok, seed)
    save_checkpoint(folder, model, tok, {"classify": CLASSES, "detect": CLASSES})
    return folder
