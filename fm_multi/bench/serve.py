"""End-to-end latency through the Gradio app, as a client sees it.

Starts `python app.py --checkpoint DIR` on a free loopback port (env GRADIO_SERVER_PORT), then for
each endpoint (api_names chat, summarize, classify, detect, transcribe) and each number of
concurrent users runs that many threads, each with its own `gradio_client.Client`, sending requests
back to back. Each user stops after `serve_requests` requests or when the endpoint's time cap has
passed, so the run is bounded both ways. Latency is submit -> complete result (for chat the whole
streamed reply). The app's own queue settings apply (default concurrency 2 per endpoint), so with
8 users most of the time is queueing: that is what a user would feel.

Arguments come from the app's API description: parameters with a default keep it, others get a
sample of their component's kind (text, image file, audio file).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import soundfile as sf
import torch

from fm_multi.bench.inputs import photo, speech_clips
from fm_multi.bench.timing import Budget, median, percentile, row
from fm_multi.preprocess import SAMPLE_RATE

ENDPOINTS = ("chat", "summarize", "classify", "detect", "transcribe")
USERS = (1, 8)
START_TIMEOUT_S = 180
TEXT = "The quick brown fox jumps over the lazy dog. It then runs into the forest and sleeps."
OVERRIDES = {"max_new_tokens": 32}  # keep chat and summarize replies short and alike
APP = Path(__file__).resolve().parents[2] / "app.py"


def app_missing() -> str | None:
    """Why the app cannot be benchmarked, or None if it can."""
    import importlib.util

    if not APP.exists():
        return f"{APP} not found (run from a source checkout)"
    for module in ("fm_multi.ui.app", "gradio_client"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not importable yet"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(log_path: Path, args=(), env: dict | None = None, timeout_s: float = START_TIMEOUT_S):
    """Start `python app.py ARGS` on a free loopback port, wait until it answers HTTP, yield
    (url, process); always stop it. `env` adds to this process's environment (a Space configures
    the app through FM_CHECKPOINT and GRADIO_* variables alone). The bench and the tests share it."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(APP), *args], cwd=APP.parent, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"app.py exited with code {proc.returncode}:\n{tail}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"app.py did not answer on {url} within {timeout_s:.0f} s:\n{tail}") from None
                time.sleep(0.3)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sample_files(folder: Path) -> dict[str, str]:
    image, audio = folder / "photo.png", folder / "speech.wav"
    photo().save(image)
    sf.write(audio, speech_clips(1)[0][0], SAMPLE_RATE)
    return {"image": str(image), "audio": str(audio)}


def arguments(params: list[dict], files: dict[str, str]) -> list:
    """Positional arguments for an endpoint from its API description."""
    from gradio_client import handle_file

    args = []
    for p in params:
        name, component = p.get("parameter_name") or "", (p.get("component") or "").lower()
        if name in OVERRIDES:
            args.append(OVERRIDES[name])
        elif p.get("parameter_has_default"):
            args.append(p.get("parameter_default"))
        elif component == "image":
            args.append(handle_file(files["image"]))
        elif component == "audio":
            args.append(handle_file(files["audio"]))
        else:
            args.append(TEXT)
    return args


def client(url: str, downloads: Path):
    from gradio_client import Client

    # analytics off: nothing leaves the machine; result files (detect's image) land in `downloads`
    return Client(url, verbose=False, analytics_enabled=False, download_files=str(downloads))


def load(url: str, endpoint: str, args: list, users: int, budget: Budget,
         downloads: Path) -> tuple[list[float], list[str]]:
    """Latencies (s) of all requests from `users` concurrent clients, and the errors seen."""
    clients = [client(url, downloads) for _ in range(users)]
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.monotonic() + budget.serve_seconds

    def user(c):
        for _ in range(budget.serve_requests):
            if time.monotonic() > deadline:
                return
            start = time.perf_counter()
            try:
                c.predict(*args, api_name=f"/{endpoint}")
            except Exception as e:  # a failed request is reported, not fatal
                with lock:
                    errors.append(f"{type(e).__name__}: {str(e)[:120]}")
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=user, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    return latencies, errors


def run(pipe, budget: Budget) -> list[dict]:
    why = app_missing()
    if why:
        return [row("e2e gradio", None, "ms", note=f"skipped: {why}")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_app(
            Path(tmp) / "app.log", ["--checkpoint", pipe.source],
            {"OMP_NUM_THREADS": str(torch.get_num_threads())}) as (url, _):  # the thread count this run decided
        files = sample_files(Path(tmp))
        probe = client(url, Path(tmp))
        api = probe.view_api(return_format="dict", print_info=False)["named_endpoints"]
        probe.close()
        for endpoint in ENDPOINTS:
            if f"/{endpoint}" not in api:
                rows.append(row(f"e2e {endpoint}", None, "ms", note="endpoint not in the app's API"))
                continue
            args = arguments(api[f"/{endpoint}"]["parameters"], files)
            warm_up = Budget(serve_requests=1, serve_seconds=budget.serve_seconds)
            load(url, endpoint, args, 1, warm_up, Path(tmp))
            for users in USERS:
                lat, errors = load(url, endpoint, args, users, budget, Path(tmp))
                note = f"{len(lat)} requests" + (f", {len(errors)} failed: {errors[0]}" if errors else "")
                p50 = 1e3 * median(lat) if lat else None
                p95 = 1e3 * percentile(lat, 95) if lat else None
                rows.append(row(f"e2e {endpoint} p50, {users} user{'s' * (users > 1)}", p50, "ms", note=note))
                rows.append(row(f"e2e {endpoint} p95, {users} user{'s' * (users > 1)}", p95, "ms", note=note))
    return rows
