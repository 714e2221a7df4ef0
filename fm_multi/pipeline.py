"""The one Python API: a checkpoint loaded once, one call per task.

    from fm_multi import Pipeline
    p = Pipeline.from_pretrained("assets/checkpoint")
    p.classify("dog.png")          # [("dog face", 0.93), ...]

The app, the CLI, the tests and the benchmarks all go through this class. Bad input raises
InputError (a ValueError) whose message says what was wrong and is safe to show to a user.

Confidences are calibrated when the checkpoint's config.json holds temperatures under
"calibration" (written by `fm-multi card`, see fm_multi/calibrate.py): class and box logits are
divided by their temperature before the softmax / sigmoid.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps

from fm_multi import calibrate, checkpoint, explain
from fm_multi.engine import SamplingParams, beam_search, generate
from fm_multi.speech_lm import CharLM
from fm_multi.preprocess import (FRAMES_PER_SECOND, SAMPLE_RATE, image_to_tensor, load_audio, log_mel,
                                 open_image, to_mono_16k)
from fm_multi.tasks import chat as chat_task
from fm_multi.tasks import classify as classify_task
from fm_multi.tasks import detect as detect_task
from fm_multi.tasks import summarize as summarize_task
from fm_multi.tasks import transcribe as transcribe_task
from fm_multi.tasks.language import TextCodec

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "checkpoint"
SILENCE_PEAK = 1e-3  # peak amplitude below -60 dBFS: nothing a listener would hear
# Summaries decode with a beam search, a copy bias (engine.py) and a stronger repetition penalty than
# chat's. Chosen on training documents (ROUGE-L; val played no part), greedy first: the form of the bias
# on a first sample of 1,000; on three more: greedy with penalty 1.1 0.207 / - / 0.204; copy bias 4: 0.231
# / 0.230 / 0.233; with penalty 2.0 as well: - / 0.246 / 0.244; around it, on the second, bias 3 or 5
# 0.238 / 0.234, penalty 1.5, 2.5, 3.0 0.242, 0.245, 0.244. Then beam search (length penalty 1) against
# that greedy decoding, on three further samples (300, 200, 300 documents): 4 beams +0.028 / +0.037 /
# +0.029, 8 beams +0.033 / +0.034 / +0.039 (standard error of each paired difference about 0.01), 16
# beams +0.043 on the second; length penalty 1.5 was worse than 1. With 8 beams the bias was then set
# again, on two more samples of 300: bias 4 +0.037 / +0.021, bias 3 +0.051 / +0.024, bias 5 +0.018 / -,
# bias 2 - / +0.012, bias 1 - / -0.005; penalty 1.5 or 3.0 (bias 4, first sample) +0.040 / +0.036,
# bias 3 with penalty 1.5 (second sample) +0.020. With bias 3, on one more sample of 300, against greedy
# with bias 3: 4 beams +0.010, 8 beams +0.029, 16 beams +0.034 at 1.7x the time of 8.
# Median time per summary, 2 threads: 0.033 s greedy, 0.085 s with 8 beams. `fm-multi eval` reports val
# with these settings, greedy (same bias) and greedy without the bias.
SUMMARY_COPY_BIAS = 3.0
SUMMARY_REPETITION_PENALTY = 2.0
SUMMARY_NUM_BEAMS = 8


class InputError(ValueError):
    """Input the model cannot take; the message is meant for the end user."""


@dataclass
class Limits:
    """Bounds on what one call accepts; each is a constructor argument of Pipeline."""
    max_text_chars: int = 20_000
    max_new_tokens: int = 512
    max_image_pixels: int = 40_000_000      # 6000 x 6000 is fine, a decompression bomb is not
    max_audio_seconds: float = 60.0         # longer audio is cut to this, with a warning
    min_audio_seconds: float = 0.1
    min_confidence: float = 0.3             # a top class below this is shown as "I'm not sure"


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Pipeline:
    def __init__(self, model, tokenizer, labels: dict, device=None, limits: Limits | None = None,
                 source: str = "", temperatures: dict | None = None, speech_lm=None):
        self.device = torch.device(device) if device else pick_device()
        self.model = model.to(self.device).eval()
        self.codec = TextCodec(tokenizer)
        self.labels = labels
        self.limits = limits or Limits()
        self.source = source
        self.temperatures = dict(temperatures or {})  # {"classify": T, "detect": T}; 1 when absent
        self.speech_lm = speech_lm  # speech_lm.CharLM: transcribe() beam-searches with it; None: greedy
        self.last_latency_s: float | None = None

    @classmethod
    def from_pretrained(cls, path_or_repo=DEFAULT_CHECKPOINT, device=None, limits: Limits | None = None):
        """Load a local checkpoint folder or a Hub repo id (raises checkpoint.CheckpointError)."""
        device = torch.device(device) if device else pick_device()
        model, tokenizer, labels, folder = checkpoint.load_checkpoint(path_or_repo, device)
        return cls(model, tokenizer, labels, device, limits, source=str(folder),
                   temperatures=calibrate.load_temperatures(folder), speech_lm=CharLM.from_checkpoint(folder))

    @property
    def config(self):
        return self.model.config

    def model_card(self) -> str:
        card = Path(self.source) / "README.md"
        return card.read_text(encoding="utf-8") if card.exists() else "(this checkpoint has no model card)"

    # --- text -----------------------------------------------------------------------------
    def _check_text(self, text, what: str) -> str:
        if not isinstance(text, str):
            raise InputError(f"{what} must be text")
        text = "".join(c for c in text if c.isprintable() or c in "\n\t")
        if not text.strip():
            raise InputError(f"{what} is empty")
        if len(text) > self.limits.max_text_chars:
            raise InputError(f"{what} has {len(text):,} characters; the limit is {self.limits.max_text_chars:,}")
        return text

    def _sampling(self, **kw) -> SamplingParams:
        params = SamplingParams(**kw)
        if params.max_new_tokens > self.limits.max_new_tokens:
            raise InputError(f"max_new_tokens is {params.max_new_tokens}; the limit is {self.limits.max_new_tokens}")
        try:
            return params.validate()
        except ValueError as e:
            raise InputError(str(e)) from None

    def _stream(self, prompt: list[int], params: SamplingParams,
                source: Sequence[int] = ()) -> Iterator[tuple[str, list]]:
        """Run generation (copy bias from `source`); yield (text so far, [(token text, probability)...]).
        Beam search (params.num_beams > 1) finds the whole reply first and yields it once."""
        tokens, probs = [], []
        start = time.perf_counter()
        stop_ids = {self.codec.end, self.codec.ids["<|eos|>"]}
        if params.num_beams > 1:
            reply = beam_search(self.model, prompt, params, stop_ids, source=source)
            self.last_latency_s = time.perf_counter() - start
            yield self.codec.decode([tok for tok, _ in reply]), [(self.codec.decode([tok]), p) for tok, p in reply]
            return
        for tok, p in generate(self.model, prompt, params, stop_ids, source=source):
            tokens.append(tok)
            probs.append((self.codec.decode([tok]), p))
            self.last_latency_s = time.perf_counter() - start
            yield self.codec.decode(tokens), probs
        self.last_latency_s = time.perf_counter() - start

    def _chat_messages(self, messages: list[dict], system_prompt: str | None) -> list[dict]:
        try:
            messages = chat_task.validate_messages(list(messages))
        except ValueError as e:
            raise InputError(str(e)) from None
        messages = [{"role": m["role"], "content": self._check_text(m["content"], f"the {m['role']} message")
                     if m["role"] == "user" else str(m["content"])} for m in messages]
        if system_prompt and system_prompt.strip() and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self._check_text(system_prompt, "the system prompt")}] + messages
        return messages

    def chat_stream_detailed(self, messages: list[dict], system_prompt: str | None = None, **sampling):
        """Yield (reply so far, per-token probabilities) as tokens arrive."""
        messages = self._chat_messages(messages, system_prompt)
        params = self._sampling(**sampling)
        budget = self.config.max_seq_len - params.max_new_tokens
        if budget < 8:
            raise InputError(f"max_new_tokens leaves no room for the prompt (context {self.config.max_seq_len})")
        yield from self._stream(chat_task.prompt_ids(self.codec, messages, budget), params)

    def chat_stream(self, messages: list[dict], system_prompt: str | None = None, **sampling) -> Iterator[str]:
        """Yield the assistant's reply so far, token by token."""
        for text, _ in self.chat_stream_detailed(messages, system_prompt, **sampling):
            yield text

    def chat(self, messages: list[dict], system_prompt: str | None = None, **sampling) -> str:
        text = ""
        for text in self.chat_stream(messages, system_prompt, **sampling):
            pass
        return text

    @torch.inference_mode()
    def chat_token_probs(self, messages: list[dict], system_prompt: str | None = None) -> list[tuple[str, float]]:
        """[(token text, probability)] of each token of the last message, an assistant reply, given
        the turns before it: the probabilities generation reported, recomputed in one forward pass.

        The reply is re-encoded from its text; for byte-level BPE that gives back the generated
        tokens except in rare merges, so a sampled reply can be explained after it was streamed.
        """
        *context, reply = self._chat_messages(messages, system_prompt)
        if reply["role"] != "assistant" or not any(m["role"] == "user" for m in context):
            raise InputError("there is no assistant reply to explain yet")
        ids = self.codec.encode(reply["content"])[: self.config.max_seq_len // 2]
        prompt = chat_task.prompt_ids(self.codec, context, self.config.max_seq_len - len(ids))
        return self._score(prompt, ids)

    def _score(self, prompt: list[int], ids: list[int]) -> list[tuple[str, float]]:
        """Teacher-forced probability of each of `ids` after `prompt` (one forward, no cache)."""
        if not ids:
            return []
        idx = torch.tensor([prompt + ids], device=self.device)
        logits = self.model.forward_text(idx)[0, len(prompt) - 1:-1].float()     # (len(ids), vocab)
        probs = logits.softmax(-1).gather(-1, idx[0, len(prompt):, None])[:, 0]  # (len(ids),)
        return [(self.codec.decode([t]), float(p)) for t, p in zip(ids, probs.tolist())]

    def summarize_detailed(self, text: str, max_new_tokens: int = 48, **sampling) -> tuple[str, list]:
        """-> (summary, [(token text, probability)...]). A beam search with the copy bias and repetition
        penalty above (SUMMARY_NUM_BEAMS, SUMMARY_COPY_BIAS, SUMMARY_REPETITION_PENALTY) unless `sampling`
        says otherwise (num_beams=1: greedy, or sampled with a temperature above 0)."""
        text = self._check_text(text, "the text to summarize")
        beams = SUMMARY_NUM_BEAMS if sampling.get("temperature", 0.0) == 0 else 1
        sampling = {"temperature": 0.0, "copy_bias": SUMMARY_COPY_BIAS, "num_beams": beams,
                    "repetition_penalty": SUMMARY_REPETITION_PENALTY, **sampling, "max_new_tokens": max_new_tokens}
        params = self._sampling(**sampling)
        budget = self.config.max_seq_len - params.max_new_tokens
        ids, _ = summarize_task.encode_summarize(self.codec, text, max_document_tokens=max(budget - 4, 8))
        out, probs = "", []
        for out, probs in self._stream(ids, params, source=summarize_task.document_ids(ids)):
            pass
        return out.strip(), probs

    def summarize(self, text: str, max_new_tokens: int = 48, **sampling) -> str:
        return self.summarize_detailed(text, max_new_tokens, **sampling)[0]

    # --- images ---------------------------------------------------------------------------
    def load_image(self, image) -> Image.Image:
        """Path, bytes, array or PIL image -> RGB-able PIL image, refusing unreadable or huge ones."""
        if image is None:
            raise InputError("no image was given")
        Image.MAX_IMAGE_PIXELS = self.limits.max_image_pixels
        try:
            img = ImageOps.exif_transpose(open_image(image))  # boxes in the pixels a viewer sees
        except Image.DecompressionBombError:
            raise InputError(f"the image has more than {self.limits.max_image_pixels:,} pixels") from None
        except Exception:
            raise InputError("the file is not an image that can be read (empty or corrupt?)") from None
        w, h = img.size
        if w * h > self.limits.max_image_pixels:
            raise InputError(f"the image is {w}x{h}; the limit is {self.limits.max_image_pixels:,} pixels")
        if w < 1 or h < 1:
            raise InputError("the image is empty")
        return img

    @torch.inference_mode()
    def classify(self, image, top_k: int = 5) -> list[tuple[str, float]]:
        start = time.perf_counter()
        img = self.load_image(image)
        views = [image_to_tensor(v, self.config.image_size)[None].to(self.device)
                 for v in (img, classify_task.centre_crop(img))]
        logits = classify_task.predict(self.model, *views) / self.temperatures.get("classify", 1.0)
        result = classify_task.top_k(logits, self.labels["classify"], top_k)[0]
        self.last_latency_s = time.perf_counter() - start
        return result

    def is_unsure(self, top: list[tuple[str, float]]) -> bool:
        """Whether the best class of a classify() answer is below Limits.min_confidence."""
        return not top or top[0][1] < self.limits.min_confidence

    def unsure_message(self, top: list[tuple[str, float]]) -> str | None:
        """"I'm not sure (best guess: X, 23%)" for an unsure answer, else None."""
        if not self.is_unsure(top):
            return None
        return f"I'm not sure (best guess: {top[0][0]}, {top[0][1]:.0%})" if top else "I'm not sure"

    def _second_look(self):
        """Detection's second look: the classification head, calibrated as classify() serves it."""
        return detect_task.crop_classifier(self.model, self.labels, self.temperatures.get("classify", 1.0))

    def _detect_outputs(self, pixels: torch.Tensor) -> dict:
        out = detect_task.predict(self.model, pixels)
        return {**out, "logits": out["logits"].float() / self.temperatures.get("detect", 1.0)}

    @torch.inference_mode()
    def detect(self, image, threshold: float = 0.3) -> list[dict]:
        """-> [{"label", "score", "box": [x0, y0, x1, y1]}] in the input image's pixels, best first."""
        if not 0 <= threshold <= 1:
            raise InputError("the score threshold must be between 0 and 1")
        start = time.perf_counter()
        img = self.load_image(image)
        pixels = image_to_tensor(img, self.config.detect_image_size)[None].to(self.device)
        out = self._detect_outputs(pixels)
        result = detect_task.decode_with_crops(out, 0, img, self.labels["detect"], self._second_look(),
                                               self.config.image_size, threshold)
        self.last_latency_s = time.perf_counter() - start
        return result

    def explain_classify(self, image, top_k: int = 5) -> tuple[Image.Image, list[tuple[str, float]]]:
        """-> (the image with a saliency heat map for the top class, the top-k list)."""
        img = self.load_image(image)
        top = self.classify(img, top_k)
        pixels = image_to_tensor(img, self.config.image_size)[None].to(self.device)
        sal = explain.classify_saliency(self.model, pixels, self.labels["classify"].index(top[0][0]))
        return explain.heatmap_overlay(img, sal.cpu()), top

    def explain_detect(self, image, threshold: float = 0.3, max_boxes: int = 100) -> list[dict]:
        """detect() plus, per box, "heatmap": the image with that box's saliency map and outline.

        Each map costs a backward pass, so only the `max_boxes` best boxes are returned.
        """
        if not 0 <= threshold <= 1:
            raise InputError("the score threshold must be between 0 and 1")
        img = self.load_image(image)
        pixels = image_to_tensor(img, self.config.detect_image_size)[None].to(self.device)
        with torch.inference_mode():
            out = self._detect_outputs(pixels)
            dets = detect_task.decode_with_crops(out, 0, img, self.labels["detect"], self._second_look(),
                                                 self.config.image_size, threshold, with_patch=True)[:max_boxes]
        for d in dets:
            sal = explain.detect_saliency(self.model, pixels, d.pop("patch"), self.labels["detect"].index(d["label"]))
            d["heatmap"] = explain.draw_box(explain.heatmap_overlay(img, sal.cpu()), d["box"])
        return dets

    # --- audio ----------------------------------------------------------------------------
    def load_audio(self, audio, sample_rate: int | None = None) -> tuple[torch.Tensor, bool]:
        """Path, (sample_rate, array) as gradio gives, or an array with sample_rate -> (16 kHz mono, cut?)."""
        if audio is None:
            raise InputError("no audio was given")
        try:
            if isinstance(audio, (str, Path)):
                wave = load_audio(audio)
            elif isinstance(audio, tuple):
                wave = to_mono_16k(audio[1], int(audio[0]))
            else:
                if sample_rate is None:
                    raise InputError("pass sample_rate with a raw audio array")
                wave = to_mono_16k(audio, int(sample_rate))
        except InputError:
            raise
        except Exception:
            raise InputError("the file is not audio that can be read (wav, flac, ogg or mp3)") from None
        if not torch.isfinite(wave).all():
            raise InputError("the audio holds NaN or infinite samples")
        seconds = wave.numel() / SAMPLE_RATE
        if seconds < self.limits.min_audio_seconds:
            raise InputError(f"the audio is {seconds:.2f} s long; at least {self.limits.min_audio_seconds} s is needed")
        cut = seconds > self.limits.max_audio_seconds
        if cut:
            wave = wave[: int(self.limits.max_audio_seconds * SAMPLE_RATE)]
        return wave, cut

    @torch.inference_mode()
    def transcribe_detailed(self, audio, sample_rate: int | None = None) -> dict:
        """-> {"text", "alignment", "seconds", "truncated", "silent", "mel"}; alignment frames are 40 ms steps."""
        start = time.perf_counter()
        wave, cut = self.load_audio(audio, sample_rate)
        mel = log_mel(wave.to(self.device))
        logits, lengths = self.model.forward_transcribe(mel[None], torch.tensor([mel.size(1)], device=self.device))
        text, alignment = transcribe_task.decode(logits[0], int(lengths[0]), self.speech_lm)
        self.last_latency_s = time.perf_counter() - start
        return {"text": text, "alignment": alignment, "seconds": wave.numel() / SAMPLE_RATE, "truncated": cut,
                "silent": bool(wave.abs().max() < SILENCE_PEAK), "mel": mel.cpu(),
                "frames_per_token": self.config.audio_stride,
                "frame_seconds": 1 / FRAMES_PER_SECOND}

    def transcribe(self, audio, sample_rate: int | None = None) -> str:
        return self.transcribe_detailed(audio, sample_rate)["text"]
