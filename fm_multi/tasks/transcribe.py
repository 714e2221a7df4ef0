"""Speech-to-text with CTC: transcript <-> symbol ids, batching, loss, greedy and beam-search decoding."""
from __future__ import annotations

import functools
import heapq
import math

import torch
import torch.nn.functional as F

from fm_multi.config import CTC_ALPHABET
from fm_multi.preprocess import log_mel, pad_mels, to_mono_16k, warp_mel
from fm_multi.speech_lm import END

SYMBOL_ID = {s: i for i, s in enumerate(CTC_ALPHABET) if i > 0}


def normalize_for_ctc(text: str) -> str:
    """Lower case, single spaces, characters outside the CTC alphabet dropped: what the head can spell."""
    return "".join(c for c in " ".join(text.lower().split()) if c in SYMBOL_ID)


def encode_text(text: str) -> list[int]:
    """Transcript -> CTC symbol ids (see normalize_for_ctc)."""
    return [SYMBOL_ID[c] for c in normalize_for_ctc(text)]


def collate(examples: list[dict]) -> dict:
    """[{"audio": 16 kHz mono samples, "text"}] -> log-mels (B, 80, T), lengths and CTC targets. An
    example's "warp", set by training's augmentation, stretches its log-mel (preprocess.warp_mel)."""
    mels, lengths = pad_mels([warp_mel(log_mel(to_mono_16k(e["audio"], 16_000)), e.get("warp", 1.0))
                              for e in examples])
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


# Beam search settings, chosen on the even-numbered half of the speech val set with the stage-14 checkpoint
# (15,000 steps) and an order-6 model; README "Speech-to-text decoding" has the figures.
BEAM, LM_WEIGHT, LETTER_BONUS = 16, 0.7, 2.0
PRUNE_LOGP = math.log(3e-4)  # letters less likely than this in a frame are not tried there


def _logsumexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a if b == -math.inf else a + math.log1p(math.exp(b - a))


def _merge(beams: dict, prefix: str, blank: float, last: float, lang: float, align: tuple, path: float) -> None:
    """Add one way of reaching `prefix` to this frame's beams (probabilities summed, best path's alignment)."""
    e = beams.setdefault(prefix, [-math.inf, -math.inf, lang, align, -math.inf])
    e[0], e[1] = _logsumexp(e[0], blank), _logsumexp(e[1], last)
    if path > e[4]:
        e[3], e[4] = align, path


def beam_decode(logits: torch.Tensor, length: int, lm, beam: int = BEAM, lm_weight: float = LM_WEIGHT,
                letter_bonus: float = LETTER_BONUS) -> tuple[str, list[dict]]:
    """CTC prefix beam search with a character language model (speech_lm.CharLM) -> text, alignment.

    A prefix's CTC probability sums every frame path that spells it, kept apart for paths that end in a
    blank and in its last letter (a repeated letter needs a blank between). Its score adds lm_weight x
    the model's log-probability of each letter, and letter_bonus per letter, which offsets the model's
    pull towards short texts; the ending is scored too. The alignment is that of the best path into each
    prefix, in greedy_decode's form.
    """
    logp = logits[:length].float().log_softmax(-1).tolist()
    NEG = -math.inf
    # prefix -> [log p (ends in blank), log p (ends in its last letter), language score, alignment, best path]
    beams = {"": [0.0, NEG, 0.0, (), 0.0]}
    for t, row in enumerate(logp):
        letters = [k for k in range(1, len(row)) if row[k] > PRUNE_LOGP]
        nxt = {}
        add = functools.partial(_merge, nxt)
        for prefix, (pb, pl, lang, align, path) in beams.items():
            total = _logsumexp(pb, pl)
            add(prefix, total + row[0], NEG, lang, align, path + row[0])  # a blank
            for k in letters:
                c, q = CTC_ALPHABET[k], row[k]
                before = total
                if prefix.endswith(c):
                    add(prefix, NEG, pl + q, lang, align, path + q)  # the same letter held on
                    before = pb  # a repeated letter needs a blank between
                if before == NEG or (c == " " and (not prefix or prefix.endswith(" "))):
                    continue
                add(prefix + c, NEG, before + q, lang + lm_weight * lm.logp(prefix, c) + letter_bonus,
                    align + ({"char": c, "frame": t, "prob": math.exp(q)},), path + q)
        beams = dict(heapq.nlargest(beam, nxt.items(), key=lambda kv: _logsumexp(kv[1][0], kv[1][1]) + kv[1][2]))

    def final(kv):
        prefix, (pb, pl, lang, _, _) = kv
        return _logsumexp(pb, pl) + lang + lm_weight * lm.logp(prefix.rstrip(), END)
    text, (_, _, _, align, _) = max(beams.items(), key=final)
    return text.strip(), list(align)


def decode(logits: torch.Tensor, length: int, lm=None) -> tuple[str, list[dict]]:
    """beam_decode with the language model when there is one, else greedy_decode."""
    return beam_decode(logits, length, lm) if lm is not None else greedy_decode(logits, length)
