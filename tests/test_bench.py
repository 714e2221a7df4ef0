"""The benchmark machinery on a tiny checkpoint with one round: row schema, the speedup convention,
the JSON report. Also the behaviour the speed work must keep: generation runs the prompt once, and
sampling from the short candidate list draws from the same distribution as the full vocabulary.
No timing is asserted."""
from __future__ import annotations

import json

import pytest
import torch

from fm_multi import Pipeline
from fm_multi.bench import timing
from fm_multi.bench.runner import run_groups
from fm_multi.bench.timing import Budget, interleaved, percentile, row
from fm_multi.engine import SamplingParams, candidates, generate
from helpers import make_checkpoint

ONE_ROUND = Budget(repeats=1, seconds=0.0, warmup=0, new_tokens=4, clips=1, train_steps=1,
                   serve_requests=1, serve_seconds=1.0)
ROW_KEYS = {"benchmark", "ours", "peer", "unit", "speedup"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("bench") / "ckpt")


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return Pipeline.from_pretrained(checkpoint, device="cpu")


def check_rows(rows: list[dict]) -> None:
    assert rows
    for r in rows:
        assert ROW_KEYS <= set(r), r
        if r["peer"] is None:
            assert r["speedup"] is None
            continue
        assert r["ours"] > 0 and r["peer"] > 0
        expected = r["peer"] / r["ours"] if r["unit"] in timing.LOWER_IS_BETTER else r["ours"] / r["peer"]
        assert r["speedup"] == pytest.approx(expected)


def test_speedup_is_peer_time_over_ours():
    assert row("t", 10.0, "ms", peer=30.0)["speedup"] == pytest.approx(3.0)     # we take a third of the time
    assert row("r", 300.0, "tok/s", peer=100.0)["speedup"] == pytest.approx(3.0)  # we do 3x the tokens
    assert row("a", 50.0, "%")["speedup"] is None
    with pytest.raises(ValueError, match="unit"):
        row("x", 1.0, "furlongs", peer=2.0)


def test_targets_are_judged_on_the_named_field():
    assert row("t", 10.0, "ms", peer=9.0, target=("speedup", ">=", 1.0))["met"] is False
    assert row("t", 80.0, "ms", target=("ours", "<=", 100))["met"] is True
    assert row("t", None, "ms", target=("ours", "<=", 100))["met"] is None


def test_interleaved_runs_every_callable_each_round_after_warmup():
    calls = []
    samples = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                          Budget(repeats=3, seconds=0.0, warmup=1))
    assert [len(v) for v in samples.values()] == [3, 3]
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then the first rotates


def test_percentile_interpolates():
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert percentile([7.0], 95) == 7.0


def test_generate_runs_the_prompt_once_then_one_token_per_step(pipe):
    model, seen = pipe.model, []
    original = model.forward_text

    def spy(idx, *args, **kwargs):
        seen.append(tuple(idx.shape))
        return original(idx, *args, **kwargs)

    model.forward_text = spy
    try:
        out = list(generate(model, list(range(5, 17)), SamplingParams(max_new_tokens=6, temperature=0.0), set()))
    finally:
        del model.forward_text
    assert len(out) == 6
    assert seen == [(1, 12)] + [(1, 1)] * 5  # no step re-reads the prompt, none runs for nothing


def full_vocabulary_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The reference: temperature, top-k and top-p applied by sorting the whole vocabulary."""
    logits = logits / params.temperature
    if params.top_k:
        kth = logits.topk(min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    probs = logits.softmax(-1)
    if params.top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        sorted_p[sorted_p.cumsum(-1) - sorted_p > params.top_p] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return probs / probs.sum()


@pytest.mark.parametrize("top_k,top_p", [(50, 0.95), (0, 0.9), (20, 1.0), (0, 1.0), (500, 0.5)])
def test_sampling_candidates_match_the_full_vocabulary_distribution(top_k, top_p):
    logits = torch.randn(300, generator=torch.Generator().manual_seed(top_k)) * 3
    params = SamplingParams(temperature=0.7, top_k=top_k, top_p=top_p)
    ids, probs = candidates(logits, params)
    drawn = torch.zeros(300).index_put_((ids,), probs)
    torch.testing.assert_close(drawn / drawn.sum(), full_vocabulary_probs(logits, params))


def test_vision_rows_on_tiny_dims(pipe):
    report = run_groups(pipe, ONE_ROUND, ["vision"], log=lambda _: None)
    assert not report["skipped"]
    check_rows(report["rows"])
    assert {"date", "cpu", "cores", "torch", "threads"} <= set(report["machine"])


def test_generation_row_on_tiny_dims(pipe):
    pytest.importorskip("transformers")
    report = run_groups(pipe, ONE_ROUND, ["generate"], log=lambda _: None)
    assert not report["skipped"], report["skipped"]
    check_rows(report["rows"])
    assert report["rows"][0]["unit"] == "tok/s"


def test_training_rows_report_mfu_as_na_on_cpu(pipe):
    report = run_groups(pipe, ONE_ROUND, ["train"], log=lambda _: None)
    assert not report["skipped"], report["skipped"]
    check_rows(report["rows"])
    mfu = [r for r in report["rows"] if r["unit"] == "%"]
    assert len(mfu) == 4 and all(r["ours"] is None and "n/a on CPU" in r["note"] for r in mfu)


def test_peak_table_picks_the_specific_name_first():
    from fm_multi.bench.training import peak_tflops

    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("Some Future GPU") is None


def test_int8_copy_leaves_the_model_alone_and_stays_close(pipe):
    from fm_multi.quantize import quantize_int8

    model = pipe.model
    q = quantize_int8(model)
    assert isinstance(model.backbone.blocks[0].attn.qkv, torch.nn.Linear)
    assert not isinstance(q.backbone.blocks[0].attn.qkv, torch.nn.Linear)
    x = torch.randn(2, 3, pipe.config.image_size, pipe.config.image_size)
    with torch.inference_mode():
        a, b = model.forward_classify(x), q.forward_classify(x)
    assert a.shape == b.shape and torch.allclose(a, b, atol=0.1)


def test_serve_fills_arguments_from_the_api_description(tmp_path):
    pytest.importorskip("gradio_client")
    from fm_multi.bench.serve import OVERRIDES, arguments

    files = {"image": str(tmp_path / "a.png"), "audio": str(tmp_path / "a.wav")}
    for path in files.values():
        open(path, "wb").close()  # handle_file checks that the file exists
    params = [{"parameter_name": "image", "component": "Image", "parameter_has_default": False},
              {"parameter_name": "threshold", "component": "Slider", "parameter_has_default": True,
               "parameter_default": 0.3},
              {"parameter_name": "max_new_tokens", "component": "Slider", "parameter_has_default": True,
               "parameter_default": 128},
              {"parameter_name": "text", "component": "Textbox", "parameter_has_default": False}]
    image, threshold, tokens, text = arguments(params, files)
    assert image["path"] == files["image"] and threshold == 0.3
    assert tokens == OVERRIDES["max_new_tokens"] and isinstance(text, str)


def test_cli_writes_json_with_machine_and_rows(checkpoint, tmp_path, monkeypatch, capsys):
    from fm_multi.cli import build_parser

    monkeypatch.setattr(timing, "QUICK", ONE_ROUND)
    out = tmp_path / "bench.json"
    args = build_parser().parse_args(["bench", "--quick", "--only", "vision", "--json", str(out),
                                      "--checkpoint", str(checkpoint),
                                      "--threads", str(torch.get_num_threads())])  # leave threads as they are
    assert args.func(args) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "quick" and report["machine"]["threads"] >= 1
    check_rows(report["rows"])
    assert "| benchmark | ours | peer | unit | speedup |" in capsys.readouterr().out
