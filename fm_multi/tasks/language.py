"""Language-model plumbing shared by chat and summarization: special tokens, batching, loss.

Prompts are built from token ids, never by pasting special-token strings into text, so user text
that contains "<|assistant|>" stays plain text.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>", "<|system|>", "<|user|>",
                  "<|assistant|>", "<|end|>", "<|summarize|>", "<|summary|>"]
IGNORE = -100  # target id excluded from the loss


class TextCodec:
    """Wraps a `tokenizers.Tokenizer`: plain-text encoding plus the ids of our special tokens."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids = {}
        for tok in SPECIAL_TOKENS:
            i = tokenizer.token_to_id(tok)
            if i is None:
                raise ValueError(f"tokenizer lacks the special token {tok}")
            self.ids[tok] = i
        self.pad, self.bos, self.end = self.ids["<|pad|>"], self.ids["<|bos|>"], self.ids["<|end|>"]

    def encode(self, text: str) -> list[int]:
        """Plain text -> ids. Special-token strings inside the text are broken up, not obeyed."""
        for tok in SPECIAL_TOKENS:
            text = text.replace(tok, tok.replace("<|", "< |"))
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def collate_lm(examples: list[tuple[list[int], list[int]]], pad_id: int, max_len: int) -> dict:
    """(ids, loss_mask) pairs -> inputs (B, T) and next-token targets (B, T), right-padded.

    Sequences longer than max_len + 1 are cut at the end. Targets are IGNORE where the mask is 0.
    """
    rows = [(ids[: max_len + 1], mask[: max_len + 1]) for ids, mask in examples]
    T = max(len(ids) for ids, _ in rows) - 1
    idx = torch.full((len(rows), T), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for i, (ids, mask) in enumerate(rows):
        ids_t, mask_t = torch.tensor(ids), torch.tensor(mask, dtype=torch.bool)
        n = len(ids) - 1
        idx[i, :n] = ids_t[:-1]
        targets[i, :n] = torch.where(mask_t[1:], ids_t[1:], IGNORE)
    return {"idx": idx, "targets": targets}


def lm_loss(model, batch: dict, task: str = "chat") -> tuple[torch.Tensor, dict]:
    """Mean cross-entropy over target tokens (computed in fp32)."""
    logits = model(task, idx=batch["idx"])
    loss = F.cross_entropy(logits.float().flatten(0, 1), batch["targets"].flatten(), ignore_index=IGNORE)
    return loss, {"loss": loss.detach()}
