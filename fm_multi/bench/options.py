"""Speed options measured against our own fp32 eager model: dynamic int8 (fm_multi/quantize.py)
and torch.compile. The "peer" column here is our fp32 eager model on the same inputs.

int8 changes the numbers the model computes, so each speed row comes with an agreement row:
top-1 class, greedy tokens and CTC symbols that match fp32 on the same inputs. With a random-weights
checkpoint the logits of different classes lie close together and agreement understates what a
trained checkpoint gives (pass --checkpoint for the real figure).

torch.compile pays its compile time once per input shape; that time is in the note.
"""
from __future__ import annotations

import time

import torch

from fm_multi.bench.generation import ours_decode, prompt_and_length
from fm_multi.bench.inputs import speech_clips
from fm_multi.bench.timing import Budget, interleaved, median, row
from fm_multi.preprocess import SAMPLE_RATE, log_mel

AGREEMENT_IMAGES = 64


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return 100.0 * float((a == b).float().mean())


def run_quantize(pipe, budget: Budget) -> list[dict]:
    from fm_multi.quantize import quantize_int8

    if pipe.device.type != "cpu":
        return [row("int8 dynamic quantization", None, "ms", note="CPU only; skipped on " + pipe.device.type)]
    fp32, cfg = pipe.model, pipe.config
    int8 = quantize_int8(fp32)
    x = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(AGREEMENT_IMAGES, 3, cfg.image_size, cfg.image_size, generator=g)
    prompt, n = prompt_and_length(cfg, budget.new_tokens)
    clip = torch.from_numpy(speech_clips(1)[0][0])
    seconds = clip.numel() / SAMPLE_RATE
    mel = log_mel(clip)[None]
    lengths = torch.tensor([mel.size(2)])

    def classify(m, pixels):
        return m.forward_classify(pixels)

    def greedy(m):
        return torch.tensor(ours_decode(m, prompt, n))

    def ctc(m):
        return m.forward_transcribe(mel, lengths)[0]

    with torch.inference_mode():
        t_cls = interleaved({"ours": lambda: classify(int8, x), "peer": lambda: classify(fp32, x)}, budget)
        t_gen = interleaved({"ours": lambda: greedy(int8), "peer": lambda: greedy(fp32)}, budget)
        t_ctc = interleaved({"ours": lambda: ctc(int8), "peer": lambda: ctc(fp32)}, budget)
        top1 = _agreement(classify(int8, images).argmax(-1), classify(fp32, images).argmax(-1))
        tokens = _agreement(greedy(int8), greedy(fp32))
        symbols = _agreement(ctc(int8).argmax(-1), ctc(fp32).argmax(-1))
    return [
        row("int8 classify forward b1 vs fp32", 1e3 * median(t_cls["ours"]), "ms",
            peer=1e3 * median(t_cls["peer"])),
        row(f"int8 generate {len(prompt)}+{n} greedy vs fp32", n / median(t_gen["ours"]), "tok/s",
            peer=n / median(t_gen["peer"])),
        row("int8 transcribe forward RTF vs fp32", median(t_ctc["ours"]) / seconds, "RTF",
            peer=median(t_ctc["peer"]) / seconds),
        row("int8 top-1 agreement with fp32", top1, "%", note=f"{AGREEMENT_IMAGES} random images"),
        row("int8 greedy token agreement with fp32", tokens, "%", note=f"{n} tokens, position by position"),
        row("int8 CTC symbol agreement with fp32", symbols, "%", note="per audio token, one clip"),
    ]


def run_compile(pipe, budget: Budget) -> list[dict]:
    model, cfg = pipe.model, pipe.config
    x = torch.randn(1, 3, cfg.image_size, cfg.image_size, device=pipe.device)
    compiled = torch.compile(model.forward_classify)
    with torch.inference_mode():
        start = time.perf_counter()
        compiled(x)
        compile_s = time.perf_counter() - start
        t = interleaved({"ours": lambda: compiled(x), "peer": lambda: model.forward_classify(x)}, budget)
    return [row("torch.compile classify forward b1 vs eager", 1e3 * median(t["ours"]), "ms",
                peer=1e3 * median(t["peer"]), note=f"first call (compile) took {compile_s:.0f} s")]
