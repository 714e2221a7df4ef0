"""Autoregressive generation with the pre-allocated KV cache.

`generate` is a generator: it yields each new token id as soon as it is sampled, so streaming
is free for callers. The prompt is run once (prefill); every later step feeds one token.

A copy bias (summaries) helps the model continue a span of its source text: when the reply so far
ends with a token that occurs in the source, each token that follows it there gets `copy_bias` added
to its logit, and the bias again when the reply's last two tokens occur there together. The small
model often starts a package name right and then drifts ("Cantor" -> "Cantoremar"); the bias keeps it
on the span, more so the longer the span, without forcing a copy.

`beam_search` (num_beams > 1, summaries) keeps the likeliest few replies instead of one: at each step
every open reply is extended by its best next tokens, scored with the same biased and penalised
logits, and the best `num_beams` go on. Finished replies are ranked by their summed log-probability
divided by their length (length_penalty 1), so a short reply does not win by having fewer terms.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.7      # 0 -> greedy
    top_k: int = 50               # 0 -> off
    top_p: float = 0.95           # 1 -> off
    repetition_penalty: float = 1.1  # >1 discourages tokens already in the reply
    copy_bias: float = 0.0        # >0 favours continuing a span of the source (see the module docstring)
    num_beams: int = 1            # >1 -> beam search (needs temperature 0; see the module docstring)
    length_penalty: float = 1.0   # beam search ranks finished replies by log-probability / length ** this
    seed: int | None = None

    def validate(self) -> "SamplingParams":
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.repetition_penalty < 1:
            raise ValueError("repetition_penalty must be >= 1")
        if self.copy_bias < 0:
            raise ValueError("copy_bias must be >= 0")
        if self.num_beams < 1:
            raise ValueError("num_beams must be at least 1")
        if self.num_beams > 1 and self.temperature != 0:
            raise ValueError("beam search is deterministic: set temperature to 0 when num_beams > 1")
        if self.length_penalty < 0:
            raise ValueError("length_penalty must be >= 0")
        return self


def candidates(logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (vocab,) after any penalty -> (token ids, probabilities) of every token that can be drawn.

    Only the top-k (or, without top-k, the top-p head of the sorted vocabulary) can ever be drawn,
    so temperature, top-p and the draw work on that short list, already sorted by `topk`, instead of
    sorting and scattering the whole vocabulary on every token.
    """
    if not params.top_k and params.top_p >= 1:
        return torch.arange(logits.numel(), device=logits.device), (logits / params.temperature).softmax(-1)
    values, ids = logits.topk(min(params.top_k or logits.numel(), logits.numel()))  # descending
    probs = (values / params.temperature).softmax(-1)
    if params.top_p < 1:
        drop = probs.cumsum(-1) - probs > params.top_p  # keep the smallest set reaching top_p
        probs = probs.masked_fill(drop, 0.0)
    return ids, probs


COPY_CONTEXT = (1, 2)  # the copy bias looks for the reply's last token, then for its last two


def followers(source: Sequence[int], device=None) -> dict[tuple[int, ...], torch.Tensor]:
    """(token,) and (token, token) -> the distinct ids that directly follow them somewhere in `source`."""
    nxt: dict[tuple[int, ...], set[int]] = {}
    for n in COPY_CONTEXT:
        for i in range(len(source) - n):
            nxt.setdefault(tuple(source[i:i + n]), set()).add(source[i + n])
    return {k: torch.tensor(sorted(v), device=device) for k, v in nxt.items()}


def adjust_logits(logits: torch.Tensor, params: SamplingParams, generated: list[int],
                  follows: dict[tuple, torch.Tensor] | None = None) -> torch.Tensor:
    """logits (vocab,) -> float logits after the copy bias (`follows`: see followers) and the repetition penalty."""
    logits = logits.float()
    if params.copy_bias and follows:
        tails = [tuple(generated[-n:]) for n in COPY_CONTEXT if len(generated) >= n]
        matched = [follows[t] for t in tails if t in follows]
        if matched:
            logits = logits.clone()
            for ids in matched:
                logits[ids] += params.copy_bias
    if params.repetition_penalty > 1 and generated:
        logits = logits.clone()
        seen = torch.tensor(sorted(set(generated)), device=logits.device)
        vals = logits[seen]
        logits[seen] = torch.where(vals > 0, vals / params.repetition_penalty, vals * params.repetition_penalty)
    return logits


def sample_next(logits: torch.Tensor, params: SamplingParams, generated: list[int],
                generator: torch.Generator | None, follows: dict[tuple, torch.Tensor] | None = None) -> int:
    """logits (vocab,) -> one token id, after the copy bias (`follows`: see followers), repetition
    penalty, temperature, top-k and top-p."""
    logits = adjust_logits(logits, params, generated, follows)
    if params.temperature == 0:
        return int(logits.argmax())
    ids, probs = candidates(logits, params)
    return int(ids[torch.multinomial(probs, 1, generator=generator)])


@torch.inference_mode()
def generate(model, prompt: list[int], params: SamplingParams, stop_ids: set[int],
             source: Sequence[int] = ()) -> Iterator[tuple[int, float]]:
    """Yield (token id, probability under the model) for each new token until a stop id or the limit.

    The stop token itself is not yielded. `prompt` must leave room for max_new_tokens. `source`: the
    text the copy bias copies from (usually a part of the prompt). The probability is the model's own,
    before any bias or penalty.
    """
    params.validate()
    device = next(model.parameters()).device
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    max_len = min(model.config.max_seq_len, len(prompt) + params.max_new_tokens)
    cache = model.new_kv_cache(1, max_len)
    prompt_ids = torch.tensor([prompt], device=device)
    logits = model.forward_text(prompt_ids, kv_cache=cache, last_only=True)[0, -1]  # prefill, once
    follows = followers(source, device) if params.copy_bias else None
    generated: list[int] = []
    while len(generated) < params.max_new_tokens and cache.pos < max_len:
        tok = sample_next(logits, params, generated, generator, follows)
        if tok in stop_ids:
            return
        yield tok, float(logits.float().softmax(-1)[tok])
        generated.append(tok)
        if len(generated) == params.max_new_tokens or cache.pos >= max_len:
            return  # done: skip a forward whose logits nobody would read
        logits = model.forward_text(torch.tensor([[tok]], device=device), kv_cache=cache)[0, -1]


@torch.inference_mode()
def beam_search(model, prompt: list[int], params: SamplingParams, stop_ids: set[int],
                source: Sequence[int] = ()) -> list[tuple[int, float]]:
    """The best reply of a beam search with params.num_beams beams: [(token id, probability under the
    model)], as generate yields them (the stop token left out, the probability before any bias or penalty).

    Each step extends every open reply by its 2 x num_beams best tokens under the adjusted logits
    (copy bias from `source`, repetition penalty; see adjust_logits) and keeps the best num_beams by
    summed log-probability. A candidate ending in a stop id among those best is finished instead,
    scored by its sum / length ** length_penalty. The search ends when num_beams replies have finished
    or at max_new_tokens, where the open ones are scored the same way. The beams share one KV cache
    whose rows are reordered after each step.
    """
    params.validate()
    device = next(model.parameters()).device
    max_len = min(model.config.max_seq_len, len(prompt) + params.max_new_tokens)
    cache = model.new_kv_cache(1, max_len)
    logits = model.forward_text(torch.tensor([prompt], device=device), kv_cache=cache, last_only=True)[:, -1]
    follows = followers(source, device) if params.copy_bias else None
    # a reply: (summed adjusted log-probability, [(token, the model's own probability)])
    open_: list[tuple[float, list[tuple[int, float]]]] = [(0.0, [])]
    finished: list[tuple[float, list[tuple[int, float]]]] = []  # (normalised score, reply without the stop)

    def score(total: float, n: int) -> float:
        return total / max(n, 1) ** params.length_penalty

    while True:
        pool, own_probs = [], logits.float().softmax(-1)
        for row, (total, reply) in enumerate(open_):
            tokens = [tok for tok, _ in reply]
            logp = adjust_logits(logits[row], params, tokens, follows).log_softmax(-1)
            top, ids = logp.topk(min(2 * params.num_beams, logp.numel()))
            own = own_probs[row, ids]
            pool += [(total + lp, reply + [(tok, p)], row)
                     for lp, tok, p in zip(top.tolist(), ids.tolist(), own.tolist())]
        pool.sort(key=lambda c: -c[0])
        open_, rows = [], []
        for total, reply, row in pool:
            if reply[-1][0] in stop_ids:
                finished.append((score(total, len(reply)), reply[:-1]))
            else:
                open_.append((total, reply))
                rows.append(row)
            if len(open_) == params.num_beams:
                break
        length = len(open_[0][1]) if open_ else 0
        if len(finished) >= params.num_beams or not open_ or length >= params.max_new_tokens \
                or cache.pos >= max_len:
            finished += [(score(total, len(reply)), reply) for total, reply in open_]
            return max(finished, key=lambda f: f[0])[1]
        cache.select(torch.tensor(rows, device=device))
        last = torch.tensor([[reply[-1][0]] for _, reply in open_], device=device)
        logits = model.forward_text(last, kv_cache=cache)[:, -1]
