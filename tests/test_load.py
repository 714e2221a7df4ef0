"""Load: 8 concurrent gradio_client users against `python app.py` on loopback.

Every user cycles through the five endpoints with the same example files, and every round starts
with all users sending the identical image at the same moment (gradio caches uploads by content, so
identical files racing into that cache are part of the test). No request may fail, and the server's
resident memory at the end must stay within 10% of its value after warm-up.

Warm-up is one round of every user at once, so memory is measured from a server that has already
run all its endpoints concurrently. The server bounds glibc's malloc arenas and returns free pages
after each request (fm_multi/ui/memory.py); FM_LOAD_ARENAS=16 runs the server with glibc's default
arena count on 2 cores, to compare.

The CI version runs for FM_LOAD_SECONDS (default 20 s); `python -m pytest -m slow tests/test_load.py -s`
runs the 5-minute version and prints its figures.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from tests.test_app import EXAMPLES, SYSTEM, make_app_checkpoint, running_app

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

USERS = 8


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def calls():
    """One request per endpoint: (api_name, args)."""
    text = (EXAMPLES / "package_description.txt").read_text()
    return [
        ("/classify", (handle_file(str(EXAMPLES / "dog.png")),)),
        ("/detect", (handle_file(str(EXAMPLES / "scene.png")), 0.3)),
        ("/transcribe", (handle_file(str(EXAMPLES / "hello_world.wav")),)),
        ("/summarize", (text, 16)),
        ("/chat", ("What is 12 plus 7?", SYSTEM, 0.7, 50, 0.95, 16)),
    ]


def user(url: str, deadline: float, barrier: threading.Barrier, results: list, max_requests: int):
    client = Client(url, verbose=False)
    done = 0
    while time.monotonic() < deadline and done < max_requests:
        try:
            barrier.wait(timeout=120)  # every round opens with the same image sent by all users at once
        except threading.BrokenBarrierError:
            break
        for api_name, args in calls():
            start = time.monotonic()
            try:
                client.predict(*args, api_name=api_name)
                results.append((api_name, time.monotonic() - start, None))
            except Exception as e:  # recorded, then asserted on: a load test must see every failure
                results.append((api_name, time.monotonic() - start, f"{type(e).__name__}: {e}"))
            done += 1
    barrier.abort()


def load_phase(url: str, seconds: float, max_requests: int) -> list:
    """USERS clients for up to `seconds`, each stopping after max_requests -> [(api, seconds, error)]."""
    results: list = []
    barrier = threading.Barrier(USERS)
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=user, args=(url, deadline, barrier, results, max_requests))
               for _ in range(USERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 300)
    assert not any(t.is_alive() for t in threads), "a user hung"
    return results


def run_load(tmp_path, seconds: float, env: dict | None = None) -> dict:
    """Warm-up (every user sends one round at once, so the server has run all its endpoints
    concurrently), then `seconds` of load with the server's resident memory sampled every 5 s."""
    checkpoint = make_app_checkpoint(tmp_path / "checkpoint")
    with running_app(checkpoint, tmp_path / "server.log", env) as (url, proc):
        warm_results = load_phase(url, 180, len(calls()))
        assert not [r for r in warm_results if r[2]], warm_results
        rss_warm, samples, stop = rss_mb(proc.pid), [], threading.Event()

        def sample():
            while not stop.wait(5):
                samples.append(rss_mb(proc.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            results = load_phase(url, seconds, 2_000)
        finally:
            stop.set()
            sampler.join()
        rss_end = rss_mb(proc.pid)
        assert Client(url, verbose=False).predict(*calls()[0][1], api_name="/classify")["confidences"], \
            "still serving"
    latencies = np.array([r[1] for r in results])
    report = {"requests": len(results), "failures": [r for r in results if r[2]],
              "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95)),
              "rss_warm_mb": rss_warm, "rss_end_mb": rss_end, "rss_max_mb": max(samples + [rss_end])}
    quarters = [round(samples[min(len(samples) - 1, len(samples) * q // 4)]) for q in (1, 2, 3)] if samples else []
    print(f"\nload: {report['requests']} requests, {len(report['failures'])} failed, "
          f"p50 {report['p50_s']:.2f} s, p95 {report['p95_s']:.2f} s, RSS {rss_warm:.0f} MB after warm-up "
          f"-> {quarters} MB at 1/4, 1/2, 3/4 -> {rss_end:.0f} MB at the end (max {report['rss_max_mb']:.0f})")
    return report


def check(report: dict):
    assert report["requests"] >= USERS * 5
    assert not report["failures"], report["failures"][:3]
    assert report["rss_end_mb"] <= 1.10 * report["rss_warm_mb"]


def arena_env() -> dict:
    arenas = os.environ.get("FM_LOAD_ARENAS")
    return {"MALLOC_ARENA_MAX": arenas} if arenas else {}


def test_eight_users_briefly(tmp_path):
    check(run_load(tmp_path, float(os.environ.get("FM_LOAD_SECONDS", 20)), arena_env()))


@pytest.mark.slow
def test_eight_users_for_five_minutes(tmp_path):
    check(run_load(tmp_path, 300.0, arena_env()))
