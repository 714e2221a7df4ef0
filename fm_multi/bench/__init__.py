"""Benchmarks: fm_multi against peer implementations of the same work, plus absolute latencies.

    fm-multi bench --quick --json bench.json

Groups (each a module here): vision (classify forward vs timm's VisionTransformer), generation
(greedy tok/s vs Hugging Face GPT-2), speech (RTF vs pocketsphinx and the Whisper-tiny
architecture), latency (Pipeline calls vs product targets), options (int8, torch.compile), training
(samples/s, tokens/s, MFU on GPU) and serve (p50/p95 through the Gradio app). Peers come from the
`bench` extra and are never runtime dependencies. Timing rules are in timing.py.
"""
from fm_multi.bench.cli import add_cli

__all__ = ["add_cli"]
