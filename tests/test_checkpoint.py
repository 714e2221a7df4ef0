"""Checkpoint format: round trip, bf16, refusal of corrupt files with the file named, Hub ids."""
from __future__ import annotations

import json

import pytest
import torch

from fm_multi.checkpoint import CheckpointError, load_checkpoint, resolve, save_checkpoint
from fm_multi.cli import main as cli_main
from helpers import CLASSES, make_checkpoint, make_model, make_tokenizer


@pytest.fixture
def ckpt(tmp_path):
    return make_checkpoint(tmp_path / "ckpt")


def _outputs(model):
    torch.manual_seed(1)
    c = model.config
    with torch.no_grad():
        return (model("chat", idx=torch.arange(10)[None]),
                model("classify", pixels=torch.randn(2, 3, c.image_size, c.image_size)),
                model("detect", pixels=torch.randn(1, 3, c.detect_image_size, c.detect_image_size))["boxes"],
                model("transcribe", mel=torch.randn(1, 80, 50), mel_lengths=torch.tensor([50]))[0])


def test_save_then_load_gives_identical_outputs(tmp_path):
    tok = make_tokenizer()
    model = make_model(tok).eval()
    save_checkpoint(tmp_path / "c", model, tok, {"classify": CLASSES, "detect": CLASSES})
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(
        ["config.json", "model.safetensors", "tokenizer.json", "labels.json", "README.md"])
    loaded, tok2, labels, _ = load_checkpoint(tmp_path / "c")
    for a, b in zip(_outputs(model), _outputs(loaded)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert tok2.encode("a dog face").ids == tok.encode("a dog face").ids
    assert labels == {"classify": CLASSES, "detect": CLASSES}


def test_bf16_checkpoint_is_half_the_size_and_close(tmp_path):
    tok = make_tokenizer()
    model = make_model(tok).eval()
    save_checkpoint(tmp_path / "f32", model, tok, {"classify": CLASSES, "detect": CLASSES})
    save_checkpoint(tmp_path / "bf16", model, tok, {"classify": CLASSES, "detect": CLASSES}, dtype=torch.bfloat16)
    s32 = (tmp_path / "f32" / "model.safetensors").stat().st_size
    s16 = (tmp_path / "bf16" / "model.safetensors").stat().st_size
    assert s16 < 0.55 * s32
    loaded = load_checkpoint(tmp_path / "bf16")[0]
    assert next(loaded.parameters()).dtype == torch.float32
    torch.testing.assert_close(_outputs(model)[1], _outputs(loaded)[1], atol=0.05, rtol=0.05)


def test_export_cli_writes_bf16_and_keeps_the_config_notes(ckpt, tmp_path, capsys):
    config = json.loads((ckpt / "config.json").read_text())
    config.update(train={"step": 40, "preset": "tiny"}, calibration={"classify": 1.5})
    (ckpt / "config.json").write_text(json.dumps(config))
    out = tmp_path / "shipped"
    assert cli_main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert "MB (bf16)" in capsys.readouterr().out
    assert (out / "model.safetensors").stat().st_size < 0.6 * (ckpt / "model.safetensors").stat().st_size
    exported = json.loads((out / "config.json").read_text())
    assert exported["train"] == {"step": 40, "preset": "tiny"} and exported["calibration"] == {"classify": 1.5}
    original, exported_model = load_checkpoint(ckpt)[0], load_checkpoint(out)[0]
    logits = [_outputs(m)[1] for m in (original, exported_model)]
    torch.testing.assert_close(logits[0], logits[1], rtol=0.05, atol=0.05)
    assert cli_main(["export", "--checkpoint", str(tmp_path / "nothing"), "--out", str(out)]) == 2


def test_export_averages_the_weights_of_two_checkpoints_of_one_model(tmp_path, capsys):
    a, b = make_checkpoint(tmp_path / "a", seed=0), make_checkpoint(tmp_path / "b", seed=1)
    out = tmp_path / "avg"
    assert cli_main(["export", "--checkpoint", str(a), "--average-with", str(b), "--weight", "0.25",
                     "--dtype", "fp32", "--out", str(out)]) == 0
    mine, theirs, avg = (dict(load_checkpoint(f)[0].named_parameters()) for f in (a, b, out))
    assert any(not torch.equal(p, theirs[name]) for name, p in mine.items())       # two different models
    for name, p in avg.items():
        torch.testing.assert_close(p, 0.75 * mine[name] + 0.25 * theirs[name], rtol=0, atol=1e-6)
    # Another model's labels, or a weight outside [0, 1], are refused with the reason.
    save_checkpoint(tmp_path / "other", make_model(make_tokenizer()), make_tokenizer(),
                    {"classify": CLASSES[::-1], "detect": CLASSES[::-1]})
    capsys.readouterr()
    assert cli_main(["export", "--checkpoint", str(a), "--average-with", str(tmp_path / "other"),
                     "--out", str(tmp_path / "bad")]) == 2
    assert "only checkpoints of one model can be averaged" in capsys.readouterr().err
    assert cli_main(["export", "--checkpoint", str(a), "--average-with", str(b), "--weight", "1.5",
                     "--out", str(tmp_path / "bad")]) == 2
    assert "--weight must be in [0, 1]" in capsys.readouterr().err and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name,damage", [
    ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
    ("model.safetensors", lambda p: p.write_bytes(b"\x00" * 64)),
    ("config.json", lambda p: p.write_text('{"format_version": 1, "model_config": {')),
    ("config.json", lambda p: p.write_text('{"format_version": 1, "model_config": {"d_model": 64, "bogus": 1}}')),
    ("labels.json", lambda p: p.write_text('{"classify": ["only one"], "detect": []}')),
    ("tokenizer.json", lambda p: p.write_text("not json")),
    ("model.safetensors", lambda p: p.unlink()),
])
def test_damaged_checkpoint_is_refused_naming_the_file(ckpt, name, damage):
    damage(ckpt / name)
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_checkpoint(ckpt)


def test_wrong_shape_weights_are_refused(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_config"]["n_layer"] = 3  # weights hold 2 layers
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(ckpt)
    cfg["model_config"]["n_layer"] = 2
    cfg["model_config"]["mlp_ratio"] = 2
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(ckpt)


def test_speech_lm_cli_fits_into_a_checkpoint_that_export_and_pipeline_carry(ckpt, small_data, tmp_path, capsys):
    from fm_multi.checkpoint import SPEECH_LM
    from fm_multi.pipeline import Pipeline

    if not (small_data / "speech" / "train.jsonl").exists():
        pytest.skip("the small build has no speech part (espeak-ng/flite missing)")
    assert cli_main(["speech-lm", "--data", str(small_data), "--checkpoint", str(ckpt), "--order", "4"]) == 0
    assert "order 4" in capsys.readouterr().out and (ckpt / SPEECH_LM).exists()
    out = tmp_path / "shipped"
    assert cli_main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert (out / SPEECH_LM).read_bytes() == (ckpt / SPEECH_LM).read_bytes()
    pipe = Pipeline.from_pretrained(out, device="cpu")
    assert pipe.speech_lm is not None and pipe.speech_lm.order == 4
    assert isinstance(pipe.transcribe(torch.randn(16_000).numpy() * 0.1, 16_000), str)
    assert Pipeline.from_pretrained(make_checkpoint(tmp_path / "plain"), device="cpu").speech_lm is None
    (out / SPEECH_LM).write_bytes(b"\x1f\x8b broken")
    with pytest.raises(CheckpointError, match="speech_lm.json.gz is not a speech language model"):
        Pipeline.from_pretrained(out, device="cpu")
    assert cli_main(["speech-lm", "--data", str(tmp_path / "none"), "--checkpoint", str(ckpt)]) == 2


def test_hub_ids_are_validated_and_offline_fails_in_one_sentence(monkeypatch, tmp_path):
    for bad in ["../etc/passwd", "a/b/c", "no-slash", "owner/..", "https://evil/x"]:
        with pytest.raises(CheckpointError, match="neither a local checkpoint folder"):
            resolve(bad)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match="could not fetch 'someone/fm-multi-small'"):
        resolve("someone/fm-multi-small")


def test_info_cli_prints_parameter_table(ckpt, capsys):
    assert cli_main(["info", "--checkpoint", str(ckpt)]) == 0
    out = capsys.readouterr().out
    for part in ("backbone", "text_encoder", "vision_encoder", "audio_encoder", "classify_head",
                 "detect_head", "ctc_head", "total", "dog face"):
        assert part in out
    assert cli_main(["info", "--checkpoint", str(ckpt), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"]["total"] == sum(v for k, v in report["parameters"].items() if k != "total")


def test_info_cli_reports_a_bad_checkpoint_without_traceback(tmp_path, capsys):
    assert cli_main(["info", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "error" in capsys.readouterr().err
