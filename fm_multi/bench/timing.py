"""Timing primitives shared by every benchmark: interleaved repeats, medians, percentiles, rows.

The machine is shared, so a lone timing means little. Every comparison runs our callable and the
peer's in the same process, one after the other within each round, rotating which goes first,
and reports medians; a burst of load from elsewhere then hits both sides alike.

Speedup convention: always "how many times faster we are on the same work", so > 1 means we win.
For times (ms, s, RTF) it is peer / ours; for rates (tok/s, samples/s) it is ours / peer, which is
the same number (peer time / our time).
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

LOWER_IS_BETTER = {"ms", "s", "RTF"}
HIGHER_IS_BETTER = {"tok/s", "samples/s", "%"}


@dataclass
class Budget:
    """How long each benchmark may take. A comparison runs at least `repeats` rounds and keeps
    going until `seconds` have passed (cheap calls get more rounds, at most 20x `repeats`); on a
    slow or overloaded machine it stops after `max_seconds` with however many rounds (>= 1) it has."""
    repeats: int = 5
    seconds: float = 2.0
    max_seconds: float = 60.0
    warmup: int = 1
    new_tokens: int = 64          # tokens generated per generation run
    clips: int = 3                # speech clips decoded per round
    train_steps: int = 3          # timed optimizer steps per task
    serve_requests: int = 4       # requests per simulated user per endpoint
    serve_seconds: float = 20.0   # wall-clock cap per endpoint and concurrency level


QUICK = Budget(repeats=3, seconds=3.0, max_seconds=15.0, clips=2, serve_requests=3, serve_seconds=8.0)
FULL = Budget(repeats=11, seconds=10.0, max_seconds=120.0, warmup=2, new_tokens=128, clips=5, train_steps=10,
              serve_requests=10, serve_seconds=60.0)


def sync() -> None:
    """Wait for queued GPU work so a timer measures the work, not its launch."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], budget: Budget) -> dict[str, list[float]]:
    """Seconds per call for each callable: warm-up calls, then rounds that run every callable once,
    the first one rotating each round. Returns the raw samples; see `median`."""
    for _ in range(budget.warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    samples: dict[str, list[float]] = {k: [] for k in names}
    start, rounds = time.perf_counter(), 0
    while True:
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_call(fns[name]))
        rounds += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget.max_seconds or rounds >= 20 * budget.repeats:
            return samples
        if rounds >= budget.repeats and elapsed >= budget.seconds:
            return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """q in [0, 100], linear interpolation between the closest ranks."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def speedup(ours: float | None, peer: float | None, unit: str) -> float | None:
    if not ours or not peer:
        return None
    if unit in LOWER_IS_BETTER:
        return peer / ours
    if unit in HIGHER_IS_BETTER:
        return ours / peer
    raise ValueError(f"unknown unit {unit!r}: add it to LOWER_IS_BETTER or HIGHER_IS_BETTER")


def row(benchmark: str, ours: float | None, unit: str, peer: float | None = None, note: str = "",
        target: tuple[str, str, float] | None = None) -> dict:
    """One result. target = (field, op, threshold), e.g. ("speedup", ">=", 1.5) or ("ours", "<=", 100)."""
    r = {"benchmark": benchmark, "ours": ours, "peer": peer, "unit": unit,
         "speedup": speedup(ours, peer, unit)}
    if note:
        r["note"] = note
    if target is not None:
        field, op, threshold = target
        value = r[field]
        r["target"] = f"{field} {op} {threshold:g}"
        r["met"] = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
    return r


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def decide_threads(requested: int | None = None) -> str:
    """Set torch's intra-op thread count once for the whole run (ours and every peer); -> why.

    Default: torch's own choice (the physical cores), except on a machine already busier than it
    has cores, where one thread: there every parallel region waits for its slowest thread to get a
    core back, and a 2-thread batch-1 ViT forward measured 8x slower than a 1-thread one.
    """
    default = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if requested:
        threads, why = requested, "--threads"
    elif default > 1 and load >= (os.cpu_count() or default):
        threads, why = 1, f"1-minute load average {load:.1f} >= {os.cpu_count()} cores before the run"
    else:
        threads, why = default, "torch default (physical cores)"
    torch.set_num_threads(threads)
    return why


def machine_info() -> dict:
    """Everything a reader needs to judge the numbers, recorded next to them."""
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)  # other work on a shared machine
    return info


def _fmt(x) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| benchmark | ours | peer | unit | speedup | target | met | note |",
             "| --- | ---: | ---: | --- | ---: | --- | --- | --- |"]
    for r in rows:
        cells = [r["benchmark"], _fmt(r["ours"]), _fmt(r["peer"]), r["unit"],
                 "n/a" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                 r.get("target", ""), _fmt(r["met"]) if "met" in r else "", r.get("note", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
