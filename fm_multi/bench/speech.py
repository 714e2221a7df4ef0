"""Speech-to-text real-time factor (seconds of compute per second of audio; lower is faster).

Ours: `Pipeline.transcribe(samples, 16000)`: input checks, log-mel, encoder + backbone, CTC greedy
decode. Peers, on the same clips:
- pocketsphinx with its bundled US-English model (HMM acoustic model, n-gram LM, beam search),
  fed 16-bit PCM; its decoder is built once, outside the timing.
- the Whisper-tiny architecture from transformers (`WhisperForConditionalGeneration`, tiny dims,
  random weights): feature extraction (which pads every clip to Whisper's 30 s window, as Whisper
  always does) and `generate` forced to exactly 30 tokens.
The RTF of a round is its total time over the total audio duration; rows report the median round.
"""
from __future__ import annotations

import numpy as np
import torch

from fm_multi.bench.inputs import speech_clips
from fm_multi.bench.timing import Budget, interleaved, median, row
from fm_multi.preprocess import SAMPLE_RATE

WHISPER_TOKENS = 30
# Whisper "tiny" (Radford et al., 2022, table 1): width 384, 4 + 4 layers, 6 heads.
WHISPER_TINY = dict(vocab_size=51865, num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4,
                    encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536,
                    decoder_ffn_dim=1536, max_source_positions=1500, max_target_positions=448)


class Pocketsphinx:
    def __init__(self):
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")

    def __call__(self, wave: np.ndarray) -> str:
        pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


class WhisperTiny:
    def __init__(self, device: torch.device):
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.model = WhisperForConditionalGeneration(WhisperConfig(**WHISPER_TINY)).to(device).eval()
        self.features = WhisperFeatureExtractor(feature_size=WHISPER_TINY["num_mel_bins"])
        self.device = device

    def __call__(self, wave: np.ndarray) -> torch.Tensor:
        feats = self.features(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        return self.model.generate(feats.to(self.device), max_new_tokens=WHISPER_TOKENS,
                                   min_new_tokens=WHISPER_TOKENS, do_sample=False)


def _all(fn, clips):
    return lambda: [fn(c) for c in clips]


def run(pipe, budget: Budget) -> list[dict]:
    clips, source = speech_clips(budget.clips)
    seconds = sum(c.size for c in clips) / SAMPLE_RATE
    ours = _all(lambda c: pipe.transcribe(c, SAMPLE_RATE), clips)
    whisper = f"transcribe RTF vs Whisper-tiny arch ({WHISPER_TOKENS} tokens)"
    peers = (("transcribe RTF vs pocketsphinx", Pocketsphinx, ("speedup", ">=", 1.0)),
             (whisper, lambda: WhisperTiny(pipe.device), None))
    rows = []
    for name, make_peer, target in peers:
        try:
            peer = make_peer()
        except ImportError as e:
            rows.append(row(name, None, "RTF", note=f"{e.name} not installed: pip install 'fm-multi[bench]'"))
            continue
        with torch.inference_mode():
            t = interleaved({"ours": ours, "peer": _all(peer, clips)}, budget)
        note = f"{len(clips)} clips, {seconds:.1f} s of {source}; {len(t['ours'])} rounds"
        if isinstance(peer, Pocketsphinx):
            note += f"; it heard {peer(clips[0])!r}"
        else:
            note += "; Whisper pads each clip to 30 s"
        rows.append(row(name, median(t["ours"]) / seconds, "RTF", peer=median(t["peer"]) / seconds,
                        target=target, note=note))
    return rows
