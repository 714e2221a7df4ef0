"""Speech-to-text with CTC: transcript <-> symbol ids, batching, loss, greedy decoding."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fm_multi.config import CTC_ALPHABET
from fm_multi.preprocess import log_mel, pad_mels, to_mono_16k

SYMBOL_ID = {s: i for i, s in enumerate(CTC_ALPHABET) if i > 0}


def encode_text(text: str) -> list[int]:
    """Lower-cased transcript -> CTC symbol ids; characters outside the alphabet are dropped."""
    return [SYMBOL_ID[c] for c in " ".join(text.lower().split()) if c in SYMBOL_ID]


def collate(examples: list[dict]) -> dict:
    """[{"audio": 16 kHz mono samples, "text"}] -> log-mels (B, 80, T), lengths and CTC targets."""
    mels, lengths = pad_mels([log_mel(to_mono_16k(e["audio"], 16_000)) for e in examples])
    targets = [torch.tensor(encode_text(e["text"]), dtype=torch.long) for e in examples]
    return {"mel": mels, "mel_lengths": lengths, "targets": torch.cat(targets),
            "target_lengths": torch.tensor([len(t) for t in targets], dtype=torch.long)}


def loss(model, batch) -> tuple[torch.Tensor, dict]:
    logits, out_lengths = model("transcribe", mel=batch["mel"], mel_lengths=batch["mel_lengths"])
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T', B, K) as ctc_loss wants
    loss = F.ctc_loss(log_probs, batch["targets"], out_lengths, batch["target_lengths"],
                      blank=0, reduction="mean", zero_infinity=True)
    return loss, {"loss": loss.detach()}


def greedy_decode(logits: torch.Tensor, length: int) -> tuple[str, list[dict]]:
    """(T', K) logits of one clip -> text and its alignment.

    The alignment lists each emitted character with the token index (40 ms steps) that emitted it
    and its probability, so callers can colour words by confidence.
    """
    probs = logits[:length].float().softmax(-1)
    p, best = probs.max(-1)
    text, align, prev = [], [], 0
    for t, (s, q) in enumerate(zip(best.tolist(), p.tolist())):
        if s != 0 and s != prev:
            text.append(CTC_ALPHABET[s])
            align.append({"char": CTC_ALPHABET[s], "frame": t, "prob": q})
        prev = s
    return "".join(text).strip(), align
