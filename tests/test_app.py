"""The Gradio playground end to end: `python app.py` in a subprocess with a tiny random checkpoint,
driven through gradio_client like any API user; plus in-process checks of the handlers that a
client cannot see (stop closes generation, inference mode, warnings, launch options).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import torch
from PIL import Image

from fm_multi.bench import serve as serve_bench
from fm_multi.checkpoint import save_checkpoint
from fm_multi.config import preset
from fm_multi.model import FMMulti
from tests.helpers import CLASSES, make_tokenizer

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
LABELS = CLASSES + ["bus", "cat"]  # six classes, so the Label has a full top 5
SYSTEM = "You are a helpful assistant."


def make_app_checkpoint(folder: Path) -> Path:
    tok = make_tokenizer()
    torch.manual_seed(0)
    # a long context, so a greedy reply can run to the 512-token limit: long enough to stop it midway
    cfg = preset("tiny", vocab_size=tok.get_vocab_size(), n_classify=len(LABELS), n_detect=len(CLASSES),
                 max_seq_len=1280)
    save_checkpoint(folder, FMMulti(cfg), tok, {"classify": LABELS, "detect": CLASSES})
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_app_checkpoint(tmp_path_factory.mktemp("checkpoint"))


@contextmanager
def running_app(checkpoint: Path, log_path: Path, env: dict | None = None):
    """`python app.py` configured only through the environment, as a Space starts it -> (URL, process)."""
    env = {"FM_CHECKPOINT": str(checkpoint), "GRADIO_TEMP_DIR": str(log_path.parent / "uploads"), **(env or {})}
    with serve_bench.running_app(log_path, env=env, timeout_s=120) as (url, proc):
        yield url, proc


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with running_app(checkpoint, log_path) as (url, _):
        yield Client(url, verbose=False), log_path


@pytest.fixture(scope="module")
def client(server):
    return server[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Odd and bad files, written once."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    files = {"empty.png": b"", "corrupt.png": rng.bytes(2048), "empty.wav": b"", "noise.wav": rng.bytes(4096)}
    for name, data in files.items():
        (d / name).write_bytes(data)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(d / "tiny.png")
    Image.new("RGB", (6000, 6000), (30, 120, 200)).save(d / "huge.png")
    Image.new("RGB", (7000, 7000), (30, 120, 200)).save(d / "too_big.png")
    Image.new("L", (90, 60), 128).save(d / "gray.png")
    Image.new("RGBA", (64, 64), (0, 255, 0, 100)).save(d / "rgba.png")
    Image.new("RGB", (64, 48), (255, 0, 0)).convert("P").save(d / "palette.png")
    Image.new("RGB", (640, 480), (90, 90, 90)).save(d / "wide.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: stored 200 x 100, shown rotated as 100 x 200
    Image.new("RGB", (200, 100), (90, 90, 90)).save(d / "rotated.jpg", exif=exif)
    sf.write(d / "short.wav", np.zeros(800, np.int16), 16_000)                 # 0.05 s
    sf.write(d / "silent.wav", np.zeros(16_000, np.int16), 16_000)
    sf.write(d / "ten_minutes.wav", (rng.standard_normal(16_000 * 600) * 2000).astype(np.int16), 16_000)
    stereo = (rng.standard_normal((44_100, 2)) * 0.2).astype(np.float32)
    sf.write(d / "stereo.ogg", stereo, 44_100)
    sf.write(d / "stereo.mp3", stereo, 44_100)
    return d


def assert_still_serving(client):
    out = client.predict(handle_file(str(EXAMPLES / "dog.png")), api_name="/classify")
    assert len(out["confidences"]) == 5


# ---- the API -----------------------------------------------------------------------------------

def test_api_names_are_exactly_the_five_tasks(client):
    info = client.view_api(return_format="dict", print_info=False, all_endpoints=True)
    assert set(info["named_endpoints"]) == {"/chat", "/summarize", "/classify", "/detect", "/transcribe"}
    assert info["unnamed_endpoints"] == {}


def test_classify_gives_five_confidences(client, inputs):
    for path in [EXAMPLES / "dog.png", inputs / "tiny.png", inputs / "huge.png", inputs / "gray.png",
                 inputs / "rgba.png", inputs / "palette.png"]:
        out = client.predict(handle_file(str(path)), api_name="/classify")
        probs = [c["confidence"] for c in out["confidences"]]
        assert len(probs) == 5, path.name
        assert {c["label"] for c in out["confidences"]} <= set(LABELS)
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert out["label"] == out["confidences"][0]["label"]


@pytest.mark.parametrize("name,size", [("scene.png", (256, 256)), ("wide.jpg", (640, 480)),
                                       ("rotated.jpg", (100, 200)), ("huge.png", (6000, 6000))])
def test_detect_boxes_lie_in_the_input_image(client, inputs, name, size):
    path = EXAMPLES / name if name == "scene.png" else inputs / name
    drawn, boxes = client.predict(handle_file(str(path)), 0.0, api_name="/detect")
    w, h = size
    assert boxes and all(set(b) == {"label", "score", "box"} for b in boxes)
    for b in boxes:
        x0, y0, x1, y1 = b["box"]
        assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h and b["label"] in CLASSES and 0 <= b["score"] <= 1
    assert max(b["box"][2] for b in boxes) > w / 2  # input pixels, not the model's 64 x 64 grid
    shown = Image.open(drawn["image"])
    assert max(shown.size) <= 1024 and abs(shown.width / shown.height - w / h) < 0.02
    assert 0 < len(drawn["annotations"]) <= min(len(boxes), 30)
    strict = client.predict(handle_file(str(path)), 0.9, api_name="/detect")[1]
    assert all(b["score"] >= 0.9 for b in strict)


def test_transcribe_any_format_rate_and_channels(client, inputs):
    for path in [EXAMPLES / "hello_world.wav", EXAMPLES / "open_the_door.flac", inputs / "stereo.ogg",
                 inputs / "stereo.mp3", inputs / "silent.wav", inputs / "ten_minutes.wav"]:
        assert isinstance(client.predict(handle_file(str(path)), api_name="/transcribe"), str), path.name


def test_summarize_returns_text(client):
    text = (EXAMPLES / "package_description.txt").read_text()
    assert isinstance(client.predict(text, 16, api_name="/summarize"), str)


def test_chat_streams_growing_text(client):
    job = client.submit("What is 12 plus 7?", SYSTEM, 0.0, 50, 0.95, 12, api_name="/chat")
    replies = list(job)
    assert len(replies) >= 2 and all(isinstance(r, str) for r in replies)
    assert len(replies[-1]) > len(replies[0])


def test_stop_ends_generation_on_the_server(server):
    client, log_path = server
    # greedy, so the untrained model runs the full 512 tokens (the slider's cap) unless stopped
    job = client.submit("Spell the word apple.", SYSTEM, 0.0, 0, 1.0, 512, api_name="/chat")
    deadline = time.monotonic() + 30
    while not job.outputs() and not job.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.outputs(), f"no token streamed: {job.exception() if job.done() else 'timeout'}"
    job.cancel()
    while "chat stopped by the user after" not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    stopped = [line for line in log_path.read_text().splitlines() if "chat stopped by the user after" in line]
    assert stopped, f"the server never closed the chat generator ({len(job.outputs())} replies, {job.status()})"
    assert int(stopped[-1].split("after ")[1].split()[0]) < 512
    assert_still_serving(client)


# ---- bad input: a clear message, and the server keeps serving -----------------------------------

BAD = [
    ("/summarize", lambda d: ["", 48], "the text to summarize is empty"),
    ("/summarize", lambda d: ["word " * 20_000, 48], "has 100,000 characters; the limit is 20,000"),
    ("/summarize", lambda d: ["\x00\x07\x1b\x7f", 48], "the text to summarize is empty"),
    ("/chat", lambda d: ["", SYSTEM, 0.7, 50, 0.95, 16], "the user message is empty"),
    ("/chat", lambda d: ["hi", SYSTEM, 0.7, 50, 0.95, 5000], "Value 5000 is greater than maximum value"),
    ("/classify", lambda d: [handle_file(str(d / "empty.png"))], "not an image that can be read"),
    ("/classify", lambda d: [handle_file(str(d / "corrupt.png"))], "not an image that can be read"),
    ("/classify", lambda d: [handle_file(str(d / "too_big.png"))], "40,000,000 pixels"),
    ("/detect", lambda d: [handle_file(str(d / "corrupt.png")), 0.3], "not an image that can be read"),
    ("/detect", lambda d: [handle_file(str(EXAMPLES / "scene.png")), 1.5], "threshold must be between 0 and 1"),
    ("/transcribe", lambda d: [handle_file(str(d / "empty.wav"))], "not audio that can be read"),
    ("/transcribe", lambda d: [handle_file(str(d / "noise.wav"))], "not audio that can be read"),
    ("/transcribe", lambda d: [handle_file(str(d / "short.wav"))], "0.05 s long; at least 0.1 s is needed"),
]


@pytest.mark.parametrize("api_name,args,message", BAD, ids=[f"{a}-{m[:24]}" for a, _, m in BAD])
def test_bad_input_gets_a_clear_message(client, inputs, api_name, args, message):
    with pytest.raises(AppError) as err:  # the app's own gr.Error, not a transport failure
        client.predict(*args(inputs), api_name=api_name)
    assert message in str(err.value)
    assert "upstream" not in str(err.value)
    assert_still_serving(client)


# ---- fuzzing every endpoint over HTTP: a result or a clear message, never a crash ---------------

HTTP_FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
TEXT = st.text(st.characters(codec="utf-8"), max_size=400) | st.binary(max_size=300).map(
    lambda b: b.decode("latin-1"))  # control characters, NULs, lone surrogates excluded by utf-8


def _result_or_message(client, *args, api_name):
    try:
        return client.predict(*args, api_name=api_name)
    except AppError as e:  # the app's own gr.Error
        assert str(e).strip() and "Traceback" not in str(e) and "upstream" not in str(e)
        return None


def _upload(data: bytes, suffix: str):
    f = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    f.write(data)
    f.close()
    return handle_file(f.name)


@HTTP_FUZZ
@given(data=st.binary(max_size=3000), suffix=st.sampled_from([".png", ".jpg", ".gif", ".webp", ".bmp"]),
       threshold=st.floats(-1e6, 1e6))
def test_fuzz_image_endpoints(client, data, suffix, threshold):
    _result_or_message(client, _upload(data, suffix), api_name="/classify")
    _result_or_message(client, _upload(data, suffix), threshold, api_name="/detect")


@HTTP_FUZZ
@given(data=st.binary(max_size=6000), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3"]))
def test_fuzz_transcribe(client, data, suffix):
    _result_or_message(client, _upload(data, suffix), api_name="/transcribe")


@HTTP_FUZZ
@given(text=TEXT, words=st.integers(-10**6, 10**6))
def test_fuzz_summarize(client, text, words):
    out = _result_or_message(client, text, words, api_name="/summarize")
    assert out is None or isinstance(out, str)


@HTTP_FUZZ
@given(message=TEXT, system=TEXT, temperature=st.floats(-1e3, 1e3), top_k=st.integers(-10**6, 10**6),
       top_p=st.floats(-1e3, 1e3), new_tokens=st.integers(-10**6, 10**6))
def test_fuzz_chat(client, message, system, temperature, top_k, top_p, new_tokens):
    out = _result_or_message(client, message, system, temperature, top_k, top_p, new_tokens, api_name="/chat")
    assert out is None or isinstance(out, (str, list, dict))


def test_server_serves_after_fuzzing(client):
    assert_still_serving(client)


# ---- in process: what a client cannot observe ---------------------------------------------------

@pytest.fixture(scope="module")
def pipe(checkpoint):
    from fm_multi import Pipeline

    return Pipeline.from_pretrained(checkpoint, device="cpu")


def test_stop_closes_the_decoding_loop_in_inference_mode(pipe, monkeypatch):
    import fm_multi.pipeline as pipeline_module
    from fm_multi.ui.chat import make_respond

    seen = {"steps": 0, "closed": False, "inference": []}
    real = pipeline_module.generate

    def spy(model, prompt, params, stop_ids, source=()):
        try:
            # no stop tokens: a random model may sample one at once, and this test needs a long reply
            for item in real(model, prompt, params, stop_ids=set(), source=source):
                seen["steps"] += 1
                seen["inference"].append(torch.is_inference_mode_enabled())
                yield item
        finally:
            seen["closed"] = True

    monkeypatch.setattr(pipeline_module, "generate", spy)
    reply = make_respond(pipe)("hi", [], SYSTEM, 1.0, 0, 1.0, 200)
    next(reply), next(reply)
    reply.close()
    assert seen["closed"] and seen["steps"] == 2 and all(seen["inference"])
    assert not torch.is_inference_mode_enabled()


def test_chat_sends_earlier_turns_in_gradio_message_format(pipe, monkeypatch):
    from fm_multi.ui.chat import make_respond

    seen = {}

    def fake_stream(messages, system_prompt=None, **sampling):
        seen.update(messages=messages, system=system_prompt, sampling=sampling)
        yield "ok"

    monkeypatch.setattr(pipe, "chat_stream", fake_stream)
    history = [{"role": "user", "content": [{"type": "text", "text": "Hello!"}]},
               {"role": "assistant", "content": "Hello! How can I help you?"}]
    assert list(make_respond(pipe)("What is 2 plus 2?", history, SYSTEM, 0.5, 10, 0.9, 32)) == ["ok"]
    assert seen["messages"] == [{"role": "user", "content": "Hello!"},
                                {"role": "assistant", "content": "Hello! How can I help you?"},
                                {"role": "user", "content": "What is 2 plus 2?"}]
    assert seen["system"] == SYSTEM
    assert seen["sampling"] == {"temperature": 0.5, "top_k": 10, "top_p": 0.9, "max_new_tokens": 32}


def test_long_and_silent_audio_warn(pipe, inputs):
    from fm_multi.ui.transcribe import make_transcribe

    transcribe = make_transcribe(pipe)
    with pytest.warns(UserWarning, match="longer than 60 s; only the first 60 s were transcribed"):
        assert isinstance(transcribe(str(inputs / "ten_minutes.wav")), str)
    with pytest.warns(UserWarning, match="silent"):
        transcribe(str(inputs / "silent.wav"))


def test_unexpected_errors_are_logged_and_reported_generically(pipe, monkeypatch, caplog):
    import gradio as gr

    from fm_multi.ui.classify import make_classify

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(pipe, "classify", broken)
    with pytest.raises(gr.Error) as err:
        make_classify(pipe)({"path": str(EXAMPLES / "dog.png")})
    assert "internal error" in err.value.message and "CUDA" not in err.value.message
    assert "CUDA out of memory" in caplog.text


def test_flags_default_to_the_environment(monkeypatch):
    from fm_multi.ui.app import add_arguments

    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    monkeypatch.setenv("FM_CHECKPOINT", "owner/name")
    args = add_arguments(argparse.ArgumentParser()).parse_args([])
    assert (args.host, args.port, args.checkpoint, args.share) == ("0.0.0.0", 8123, "owner/name", False)
    args = add_arguments(argparse.ArgumentParser()).parse_args(["--port", "9000", "--checkpoint", "x"])
    assert (args.port, args.checkpoint) == (9000, "x")


def test_launch_options(monkeypatch):
    from fm_multi.ui.app import add_arguments, launch

    class FakeDemo:
        def queue(self, **kwargs):
            self.queued = kwargs

        def launch(self, **kwargs):
            self.launched = kwargs

    demo = FakeDemo()
    launch(demo, add_arguments(argparse.ArgumentParser()).parse_args(["--concurrency", "3", "--max-file-size", "5MB"]))
    assert demo.queued["default_concurrency_limit"] == 3
    assert demo.launched["share"] is False and demo.launched["max_file_size"] == "5MB"
    assert demo.launched["allowed_paths"] == [str(EXAMPLES)]


def test_bad_checkpoint_exits_with_one_sentence(tmp_path, capsys):
    from fm_multi.cli import main

    out = subprocess.run([sys.executable, "app.py", "--checkpoint", str(tmp_path / "nowhere")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert main(["serve", "--checkpoint", str(tmp_path / "nowhere")]) == 2  # fm-multi serve: the same code
    for stderr in (out.stderr, capsys.readouterr().err):
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
        assert "cannot load the model" in stderr and "nowhere" in stderr
