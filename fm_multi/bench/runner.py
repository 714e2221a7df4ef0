"""Run benchmark groups against one checkpoint and collect a report: machine, rows, skipped groups."""
from __future__ import annotations

import importlib
import time
import traceback

# torch and the groups are imported when a run starts, so `fm-multi --help` stays fast.

# name -> (module:function, what it measures). Run in this order; --only picks a subset.
GROUPS = {
    "vision": ("fm_multi.bench.vision:run", "classify forward vs timm ViT, batch 1 and 32"),
    "generate": ("fm_multi.bench.generation:run", "greedy generation tok/s vs HF GPT-2"),
    "speech": ("fm_multi.bench.speech:run", "transcription RTF vs pocketsphinx and Whisper-tiny"),
    "pipeline": ("fm_multi.bench.latency:run", "absolute Pipeline latencies vs the product targets"),
    "quantize": ("fm_multi.bench.options:run_quantize", "dynamic int8 vs fp32: speed and agreement"),
    "train": ("fm_multi.bench.training:run", "training samples/s and tokens/s per task, MFU on GPU"),
    "compile": ("fm_multi.bench.options:run_compile", "torch.compile vs eager (slow: compiles first)"),
    "serve": ("fm_multi.bench.serve:run", "end-to-end p50/p95 through the Gradio app, 1 and 8 users"),
}
QUICK_SKIPS = ("compile",)  # ~45 s of compiling on a 2-core CPU for a ~1 ms answer; run it with --only


def _resolve(target: str):
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


def run_groups(pipe, budget, names: list[str], log=print) -> dict:
    """-> {"machine", "budget", "rows", "skipped", "seconds"}; a group that cannot run is listed
    under "skipped" with the reason instead of stopping the others."""
    import torch

    from fm_multi.bench.timing import machine_info

    report = {"machine": machine_info(), "checkpoint": pipe.source, "model_config": pipe.config.to_dict(),
              "budget": vars(budget), "rows": [], "skipped": []}
    start = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        log(f"[bench] {name}: {GROUPS[name][1]} ...")
        try:
            rows = _resolve(GROUPS[name][0])(pipe, budget)
        except ImportError as e:
            reason = f"{e.name or e} is not installed (pip install 'fm-multi[bench]')"
            report["skipped"].append({"group": name, "reason": reason})
            log(f"[bench] {name}: skipped, {reason}")
            continue
        except Exception as e:  # one broken group must not lose the others' numbers
            report["skipped"].append({"group": name, "reason": f"failed: {type(e).__name__}: {e}",
                                      "traceback": traceback.format_exc(limit=5)})
            log(f"[bench] {name}: FAILED, {type(e).__name__}: {e}")
            continue
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        report["rows"].extend(rows)
        log(f"[bench] {name}: {len(rows)} rows in {time.perf_counter() - t0:.0f} s")
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["machine"]["load_average_1m_end"] = machine_info().get("load_average_1m")
    return report
