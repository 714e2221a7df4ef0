"""Text generation: our engine (pre-allocated KV cache) against Hugging Face GPT-2, greedy and with
the beam search summaries use (pipeline.SUMMARY_NUM_BEAMS beams).

The peer is `GPT2LMHeadModel(GPT2Config(...))` with our width, depth, heads, MLP width, vocabulary,
context, exact GELU and tied embeddings, random weights, SDPA attention, run through its own
`generate(use_cache=True)`. Both decode greedily from the same random prompt and are forced to emit
exactly the same number of tokens (no stop tokens for us, min_new_tokens for the peer). Tokens/s
counts new tokens over the whole call, prompt prefill included. The beam searches keep the same
number of beams and run to the same length (no stop tokens; the peer's length penalty 1 as ours).
"""
from __future__ import annotations

import torch

from fm_multi.bench.timing import Budget, interleaved, median, row
from fm_multi.config import ModelConfig
from fm_multi.engine import SamplingParams, beam_search, generate
from fm_multi.pipeline import SUMMARY_NUM_BEAMS

PROMPT_TOKENS = 64
GREEDY = dict(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)


def hf_gpt2(cfg: ModelConfig) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.d_model,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=cfg.mlp_ratio * cfg.d_model,
                        activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=True)
    return GPT2LMHeadModel(config)


def prompt_and_length(cfg: ModelConfig, new_tokens: int) -> tuple[list[int], int]:
    """A random prompt and a generation length that together fit the context."""
    new_tokens = min(new_tokens, cfg.max_seq_len // 2)
    n_prompt = min(PROMPT_TOKENS, cfg.max_seq_len - new_tokens)
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, cfg.vocab_size, (n_prompt,), generator=g).tolist(), new_tokens


def ours_decode(model, prompt: list[int], n: int, beams: int = 1) -> list[int]:
    """Exactly n new tokens: greedy with one beam, else a beam search with `beams` beams."""
    params = SamplingParams(max_new_tokens=n, num_beams=beams, **GREEDY)
    pairs = beam_search(model, prompt, params, stop_ids=set()) if beams > 1 else \
        generate(model, prompt, params, stop_ids=set())
    tokens = [t for t, _ in pairs]
    if len(tokens) != n:
        raise RuntimeError(f"our decoding with {beams} beam(s) stopped after {len(tokens)} of {n} tokens")
    return tokens


def peer_decode(peer, prompt: torch.Tensor, n: int, beams: int = 1) -> torch.Tensor:
    """The peer's `generate`, forced to exactly n new tokens, with `beams` beams (1: greedy)."""
    out = peer.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                        num_beams=beams, length_penalty=1.0, do_sample=False, use_cache=True, pad_token_id=0)
    if out.shape[1] != prompt.shape[1] + n:
        raise RuntimeError(f"GPT-2 with {beams} beam(s) generated {out.shape[1] - prompt.shape[1]} of {n} tokens")
    return out


def run(pipe, budget: Budget) -> list[dict]:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model, cfg, device = pipe.model, pipe.config, pipe.device
    peer = hf_gpt2(cfg).to(device).eval()
    prompt, n = prompt_and_length(cfg, budget.new_tokens)
    prompt_t = torch.tensor([prompt], device=device)
    with torch.inference_mode():
        t = interleaved({"ours": lambda: ours_decode(model, prompt, n),
                         "peer": lambda: peer_decode(peer, prompt_t, n)}, budget)
        b = interleaved({"ours": lambda: ours_decode(model, prompt, n, SUMMARY_NUM_BEAMS),
                         "peer": lambda: peer_decode(peer, prompt_t, n, SUMMARY_NUM_BEAMS)}, budget)
    note = f"d{cfg.d_model} L{cfg.n_layer} vocab {cfg.vocab_size}; peer attention {peer.config._attn_implementation}"
    return [row(f"generate {len(prompt)}+{n} tokens greedy vs HF GPT-2", n / median(t["ours"]), "tok/s",
                peer=n / median(t["peer"]), target=("speedup", ">=", 1.5), note=f"{note}; {len(t['ours'])} rounds"),
            row(f"generate {len(prompt)}+{n} tokens, {SUMMARY_NUM_BEAMS} beams, vs HF GPT-2", n / median(b["ours"]),
                "tok/s", peer=n / median(b["peer"]), target=("speedup", ">=", 1.0),
                note=f"{note}; {len(b['ours'])} rounds")]
