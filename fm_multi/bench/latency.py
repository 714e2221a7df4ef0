"""Absolute latencies of the Pipeline calls the app makes, against the product targets.

No peer: these are the numbers a user of the app feels. Inputs are what the app hands over: a
camera-sized image (so the resize is timed), a few seconds of speech as samples, a short chat turn
with the app's default sampling settings. Chat reports the time to the first streamed token and the
decode rate after it.
"""
from __future__ import annotations

import time

import torch

from fm_multi.bench.inputs import photo, speech_clips
from fm_multi.bench.timing import Budget, interleaved, median, percentile, row
from fm_multi.preprocess import SAMPLE_RATE

CHAT = [{"role": "user", "content": "Hello! Can you tell me in a few sentences what a transformer "
                                    "model is and why it is used for language?"}]
CHAT_TOKENS = 64
TARGETS = {"classify": 100.0, "detect": 250.0, "transcribe": 0.1, "first_token": 300.0, "decode": 30.0}


def _ms_row(name: str, samples: list[float], limit: float) -> dict:
    if not samples:
        return row(name, None, "ms", target=("ours", "<=", limit), note="no output to time")
    return row(name, 1e3 * median(samples), "ms", target=("ours", "<=", limit),
               note=f"p95 {1e3 * percentile(samples, 95):.1f} ms over {len(samples)} calls")


def chat_timings(pipe, budget: Budget) -> tuple[list[float], list[float], int]:
    """-> (seconds to the first token per run, decode tok/s per run, tokens in the last run)."""
    firsts, rates, n = [], [], 0
    for i in range(budget.warmup + max(budget.repeats, 1)):
        start = time.perf_counter()
        first = None
        n = 0
        for _ in pipe.chat_stream(CHAT, max_new_tokens=CHAT_TOKENS, seed=i):
            n += 1
            if first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        if i < budget.warmup or first is None:
            continue
        firsts.append(first - start)
        if n > 1:
            rates.append((n - 1) / (end - first))
    return firsts, rates, n


def run(pipe, budget: Budget) -> list[dict]:
    image = photo()
    clip = speech_clips(1)[0][0]
    seconds = clip.size / SAMPLE_RATE
    with torch.inference_mode():
        t = interleaved({"classify": lambda: pipe.classify(image),
                         "detect": lambda: pipe.detect(image),
                         "transcribe": lambda: pipe.transcribe(clip, SAMPLE_RATE)}, budget)
    size = f"{image.size[0]}x{image.size[1]} image"
    rows = [_ms_row(f"pipeline classify ({size})", t["classify"], TARGETS["classify"]),
            _ms_row(f"pipeline detect ({size})", t["detect"], TARGETS["detect"]),
            row(f"pipeline transcribe RTF ({seconds:.1f} s clip)", median(t["transcribe"]) / seconds, "RTF",
                target=("ours", "<=", TARGETS["transcribe"]), note=f"{len(t['transcribe'])} calls")]
    firsts, rates, n = chat_timings(pipe, budget)
    rows.append(_ms_row("pipeline chat first token", firsts, TARGETS["first_token"]))
    rows.append(row("pipeline chat decode after first token", median(rates) if rates else None, "tok/s",
                    target=("ours", ">=", TARGETS["decode"]),
                    note=f"default sampling, up to {CHAT_TOKENS} tokens ({n} in the last run)"))
    return rows
