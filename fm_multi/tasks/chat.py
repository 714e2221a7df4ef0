"""Chat: OpenAI-style messages <-> token ids.

Layout: <|bos|> (<|role|> content <|end|>)* and, to ask for a reply, <|assistant|>.
Training computes the loss only on assistant contents and their closing <|end|>.
"""
from __future__ import annotations

from fm_multi.tasks.language import TextCodec, collate_lm, lm_loss

ROLES = ("system", "user", "assistant")


def validate_messages(messages) -> list[dict]:
    """Check the OpenAI role/content format; raise ValueError saying what is wrong."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has role {m['role']!r}; expected one of {ROLES}")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i} content must be a string")
    return messages


def encode_chat(codec: TextCodec, messages: list[dict], add_generation_prompt: bool = False):
    """-> (ids, loss_mask): mask is 1 on assistant content and its <|end|>."""
    ids, mask = [codec.bos], [0]
    for m in validate_messages(messages):
        content = codec.encode(m["content"])
        learn = int(m["role"] == "assistant")
        ids += [codec.ids[f"<|{m['role']}|>"]] + content + [codec.end]
        mask += [0] + [learn] * (len(content) + 1)
    if add_generation_prompt:
        ids.append(codec.ids["<|assistant|>"])
        mask.append(0)
    return ids, mask


def prompt_ids(codec: TextCodec, messages: list[dict], budget: int) -> list[int]:
    """Generation prompt that fits `budget` tokens: the oldest turns go first (system kept)."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system):]
    while True:
        ids, _ = encode_chat(codec, system + turns, add_generation_prompt=True)
        if len(ids) <= budget or len(turns) <= 1:
            return ids[-budget:] if len(ids) > budget else ids
        turns = turns[1:]


def collate(examples: list[dict], codec: TextCodec, max_len: int) -> dict:
    """examples: [{"messages": [...]}] -> LM batch."""
    return collate_lm([encode_chat(codec, e["messages"]) for e in examples], codec.pad, max_len)


def loss(model, batch):
    return lm_loss(model, batch, "chat")
