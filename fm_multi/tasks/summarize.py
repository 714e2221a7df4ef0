"""Summarization as prompted generation: <|bos|><|summarize|> document <|summary|> summary <|end|>."""
from __future__ import annotations

from fm_multi.tasks.language import TextCodec, collate_lm, lm_loss


def encode_summarize(codec: TextCodec, document: str, summary: str | None = None,
                     max_document_tokens: int = 256):
    """-> (ids, loss_mask); without a summary, the prompt that asks for one."""
    doc = codec.encode(document)[:max_document_tokens]
    ids = [codec.bos, codec.ids["<|summarize|>"]] + doc + [codec.ids["<|summary|>"]]
    mask = [0] * len(ids)
    if summary is not None:
        out = codec.encode(summary) + [codec.end]
        ids, mask = ids + out, mask + [1] * len(out)
    return ids, mask


def document_ids(prompt: list[int]) -> list[int]:
    """The document's ids inside a prompt from encode_summarize (between <|summarize|> and <|summary|>)."""
    return prompt[2:-1]


def collate(examples: list[dict], codec: TextCodec, max_len: int) -> dict:
    """examples: [{"document", "summary"}] -> LM batch. Documents are cut to leave room for the summary."""
    pairs = [encode_summarize(codec, e["document"], e["summary"], max_document_tokens=max_len - 64)
             for e in examples]
    return collate_lm(pairs, codec.pad, max_len)


def loss(model, batch):
    return lm_loss(model, batch, "summarize")
