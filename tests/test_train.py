"""Training: schedules, optimizer groups, data order, state files, resume after SIGKILL, two ranks.

All runs use the tiny preset on the miniature data folder of train_data.py.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from fm_multi import streams
from fm_multi.config import TASK_NAMES, TrainConfig, train_preset
from fm_multi.model import FMMulti
from fm_multi.run_records import StateFiles
from fm_multi.train import (NonFiniteLoss, RunSpec, apply_override, build_optimizer, decay_start, lr_factor,
                            resolve_config, rng_state, set_rng_state, task_schedule, train)
from helpers import CLASSES, make_model, make_tokenizer
from train_data import make_data_dir

REPO = Path(__file__).resolve().parent.parent
FAST = ["eval_batches=1", "log_every=5", "batch_size.chat=4", "batch_size.summarize=2", "batch_size.classify=8",
        "batch_size.detect=2", "batch_size.transcribe=2", "warmup_steps=5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data") / "d")


def spec(data, out, steps, *sets) -> RunSpec:
    return RunSpec(preset="tiny", data=str(data), out=str(out), max_steps=steps, sets=tuple(FAST) + sets)


# --- pure functions ---------------------------------------------------------------------------
def test_round_robin_gives_each_task_its_share_in_every_window():
    cfg = TrainConfig(task_weights={"chat": 3, "summarize": 2, "classify": 1, "detect": 2, "transcribe": 3})
    order = task_schedule(cfg, 110)
    for start in range(0, 110, 11):  # weights sum to 11: every window of 11 slots has the exact mix
        assert Counter(order[start:start + 11]) == Counter(cfg.task_weights)
    assert max(gap for t in TASK_NAMES for gap in _gaps(order, t)) <= 11


def _gaps(order, task):
    slots = [i for i, t in enumerate(order) if t == task]
    return [b - a for a, b in zip(slots, slots[1:])]


def test_sampled_schedule_is_a_function_of_seed_and_skips_zero_weights():
    cfg = TrainConfig(task_schedule="sample", task_weights={**TrainConfig().task_weights, "detect": 0.0})
    a, b = task_schedule(cfg, 500), task_schedule(cfg, 500)
    assert a == b and "detect" not in a
    assert task_schedule(TrainConfig(task_schedule="sample", seed=1), 200) != task_schedule(
        TrainConfig(task_schedule="sample", seed=2), 200)


def test_lr_warms_up_then_follows_the_cosine_down_to_the_floor():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))           # never rises after warm-up
    assert f[55] == pytest.approx(0.55) and f[100] == pytest.approx(0.1)


def test_wsd_stays_flat_until_its_decay_and_a_longer_run_continues_without_a_restart():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, min_lr_ratio=0.1, lr_schedule="wsd", decay_ratio=0.2)
    f = [lr_factor(s, cfg) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and set(f[9:81]) == {1.0}
    assert f[90] == pytest.approx(0.55) and f[100] == pytest.approx(0.1)
    longer = TrainConfig(**{**cfg.to_dict(), "max_steps": 200})
    assert decay_start(cfg) == 80 and decay_start(longer) == 160
    assert {lr_factor(s, longer) for s in range(80, 161)} == {1.0}
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")


def test_precision_auto_is_bf16_where_the_hardware_does_it_natively(monkeypatch):
    import fm_multi.train as T

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native in (True, False):
        monkeypatch.setattr(T, "cpu_has_bf16", lambda: native)
        assert T.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
        assert T.resolve_precision("auto", cuda) == "bf16"
        assert T.resolve_precision("fp32", cuda) == "fp32" and T.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be auto, bf16 or fp32"):
        TrainConfig(precision="fp16")


def test_weight_decay_spares_norms_biases_and_embeddings():
    model = make_model(make_tokenizer())
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in opt.param_groups[0]["params"]}
    spared = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    assert "backbone.blocks.0.attn.qkv.weight" in decayed and "audio.convs.0.weight" in decayed
    for name in ("text.tok.weight", "text.pos.weight", "vision.pos", "modality", "backbone.ln_f.weight",
                 "backbone.blocks.0.attn.qkv.bias"):
        assert name in spared
    assert len(decayed) + len(spared) == len(list(model.parameters()))


def test_overrides_reach_nested_and_model_keys_and_reject_typos():
    model, train_cfg = {"dropout": 0.0}, TrainConfig().to_dict()
    apply_override(model, train_cfg, "lr=3e-4")
    apply_override(model, train_cfg, "batch_size.chat=5")
    apply_override(model, train_cfg, "model.dropout=0.1")
    apply_override(model, train_cfg, "task_schedule=sample")
    assert (train_cfg["lr"], train_cfg["batch_size"]["chat"], model["dropout"]) == (3e-4, 5, 0.1)
    assert train_cfg["task_schedule"] == "sample"
    for bad in ("lrr=1", "batch_size.chatt=1", "lr"):
        with pytest.raises(ValueError):
            apply_override(model, train_cfg, bad)


def test_a_config_file_merges_into_the_preset(data, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"batch_size": {"chat": 3}, "lr": 1e-4}, "model": {"dropout": 0.1}}))
    model_cfg, train_cfg, _, _ = resolve_config("tiny", data, config_file=path, sets=["lr=2e-4"])
    assert train_cfg.batch_size == {**train_preset("tiny").batch_size, "chat": 3}
    assert (train_cfg.lr, model_cfg.dropout) == (2e-4, 0.1)                 # --set wins over the file


def test_sizes_come_from_the_data_folder(data):
    model_cfg, train_cfg, tokenizer, labels = resolve_config("tiny", data, sets=["lr=5e-4"], max_steps=7)
    assert model_cfg.vocab_size == tokenizer.get_vocab_size()
    assert model_cfg.n_classify == model_cfg.n_detect == len(CLASSES)
    assert (train_cfg.lr, train_cfg.max_steps) == (5e-4, 7)
    assert train_preset("small").batch_size != train_preset("tiny").batch_size


def test_batch_order_resumes_mid_stream_and_shards_ranks_disjointly():
    full = streams.BatchOrder(50, 4, seed=3)
    first = [full.batch(k) for k in range(40)]                    # crosses several epochs
    resumed = streams.BatchOrder(50, 4, seed=3, start=17)
    batches = [b for b, _ in zip(iter(resumed), range(23))]
    assert [[i for i, _ in b] for b in batches] == first[17:]
    assert len({seed for b in batches for _, seed in b}) == 23 * 4   # one augmentation seed per example
    r0, r1 = streams.BatchOrder(50, 5, 3, rank=0, world_size=2), streams.BatchOrder(50, 5, 3, rank=1, world_size=2)
    epoch0 = [i for k in range(r0.batches_per_epoch) for i in r0.batch(k)]
    epoch1 = [i for k in range(r1.batches_per_epoch) for i in r1.batch(k)]
    assert not set(epoch0) & set(epoch1) and len(set(epoch0) | set(epoch1)) == 50


def test_detection_flip_moves_the_boxes_with_the_picture():
    import random

    img = Image.new("RGB", (100, 60), (0, 0, 0))
    img.paste((255, 0, 0), (10, 5, 30, 25))
    item = (img, {"boxes": torch.tensor([[10.0, 5.0, 30.0, 25.0]]), "labels": torch.tensor([2])})
    outs = [streams.augment_detect(item, random.Random(s)) for s in range(40)]
    flipped = [o for o in outs if o[1]["boxes"].tolist() != [[10.0, 5.0, 30.0, 25.0]]]
    assert 5 < len(flipped) < 35                                   # about half the time
    assert any(o is item for o in outs)                            # most often untouched: no copy made
    for image, target in flipped:
        assert target["boxes"].tolist() == [[70.0, 5.0, 90.0, 25.0]] and target["labels"].tolist() == [2]
        assert image.getpixel((80, 15)) == (255, 0, 0) and image.getpixel((20, 15)) == (0, 0, 0)


def test_detection_line_art_inks_the_scene_and_keeps_the_boxes():
    import random

    img = Image.new("RGB", (100, 60), (250, 250, 250))
    img.paste((230, 160, 40), (20, 10, 50, 40))
    item = (img, {"boxes": torch.tensor([[20.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1])})
    outs = [streams.augment_detect(item, random.Random(s)) for s in range(40)]
    inked = [(i, t) for i, t in outs if min(max(i.getpixel((20, 25))), max(i.getpixel((79, 25)))) <= 50]
    assert 2 < len(inked) < 20                                     # about a quarter of the scenes
    for image, target in inked:                                    # the square's left or right edge is ink
        assert target["boxes"].tolist() in ([[20.0, 10.0, 50.0, 40.0]], [[50.0, 10.0, 80.0, 40.0]])
        assert image.size == img.size and image.getpixel((5, 55)) == (250, 250, 250)


def test_flatten_colours_leaves_few_colours():
    import random

    ramp = Image.linear_gradient("L").resize((64, 64)).convert("RGB")      # 64 greys
    for seed in range(5):
        out = streams.flatten_colours(ramp, random.Random(seed))
        assert out.size == ramp.size and out.mode == "RGB" and len(out.getcolors()) <= 16


def test_classification_crops_keep_the_label_and_most_of_the_picture():
    import random

    img = Image.new("RGB", (128, 128), (0, 90, 0))
    for s in range(20):
        out, label = streams.augment_classify((img, 7), random.Random(s))
        assert label == 7 and out.size[0] * out.size[1] >= 0.69 * 128 * 128


def test_classification_colour_changes_are_varied_and_keep_the_shape():
    import random

    img = Image.new("RGB", (64, 64), (250, 250, 250))
    img.paste((200, 30, 30), (16, 16, 48, 48))
    outs = [streams.jitter_colour(img, random.Random(s)) for s in range(60)]
    assert all(o.size == img.size for o in outs)
    assert len({o.getpixel((32, 32)) for o in outs}) > 30                 # many different colours
    grey = [o for o in outs if len(set(o.getpixel((32, 32)))) == 1]
    assert 0 < len(grey) < 20                                              # grey now and then
    for o in outs:                                                         # the square stays a square
        inside, outside = sum(o.getpixel((32, 32))), sum(o.getpixel((4, 4)))
        assert inside != outside
    assert streams.jitter_colour(img, random.Random(5)).tobytes() == outs[5].tobytes()   # seeded


def test_ink_outline_draws_dark_lines_on_edges_and_leaves_flat_areas_alone():
    import random

    img = Image.new("RGB", (64, 64), (250, 250, 250))
    img.paste((230, 160, 40), (16, 16, 48, 48))
    for seed in range(10):
        out = streams.ink_outline(img, random.Random(seed))
        assert out.size == img.size
        assert max(out.getpixel((15, 32))) <= 50 and max(out.getpixel((32, 16))) <= 50  # the square's edges
        assert out.getpixel((32, 32)) == (230, 160, 40) and out.getpixel((4, 4)) == (250, 250, 250)
    flat = Image.new("RGB", (64, 64), (120, 40, 200))
    assert streams.ink_outline(flat, random.Random(1)).tobytes() == flat.tobytes()   # no edge, no ink


def test_speech_augmentation_changes_speed_and_keeps_the_transcript():
    import random

    import numpy as np

    audio = np.sin(np.arange(32000) * 2 * np.pi * 440 / 16000).astype(np.float32)
    item = {"audio": audio, "text": "one two three", "speaker": "flite_kal"}
    outs = [streams.augment_speech(item, random.Random(s)) for s in range(30)]
    lengths = [len(o["audio"]) for o in outs]
    assert all(32000 / 1.1 - 1 <= n <= 32000 / 0.9 + 1 for n in lengths) and len(set(lengths)) > 20
    assert all(o["text"] == "one two three" and o["speaker"] == "flite_kal" for o in outs)
    assert all(o["audio"].dtype == np.float32 for o in outs)
    silenced = [o for o in outs if (np.abs(o["audio"][1:]) + np.abs(o["audio"][:-1]) == 0).sum() > 1000]
    assert 0 < len(silenced) < 30                                          # masks, not always
    assert np.array_equal(streams.augment_speech(item, random.Random(3))["audio"], outs[3]["audio"])
    assert item["audio"] is audio and len(audio) == 32000                  # the input is untouched
    warps = [o["warp"] for o in outs]
    assert all(0.9 <= w <= 1.1 for w in warps) and len(set(warps)) == 30


def test_mel_warp_sets_the_stretch_range_and_zero_turns_it_off():
    import random

    import numpy as np

    item = {"audio": np.linspace(-1, 1, 16000, dtype=np.float32), "text": "one"}
    for seed in range(10):
        on, off = (streams.augment_speech(item, random.Random(seed), mel_warp=w) for w in (0.1, 0.0))
        assert off["warp"] == 1.0 and np.array_equal(on["audio"], off["audio"])   # the rest is unchanged
    wide = [streams.augment_speech(item, random.Random(s), mel_warp=0.2)["warp"] for s in range(40)]
    assert 0.8 <= min(wide) < 0.9 and 1.1 < max(wide) <= 1.2
    # The training config's knob reaches the speech stream, and only values in [0, 0.5) are taken.
    data = [item] * 8
    warps = {w: next(streams.train_stream("transcribe", data, lambda b: [e["warp"] for e in b], 4, 0, 0, 0, 1, 0,
                                          mel_warp=w)) for w in (0.0, 0.1)}
    assert warps[0.0] == [1.0] * 4 and all(0.9 <= w <= 1.1 and w != 1.0 for w in warps[0.1])
    assert TrainConfig(mel_warp=0).mel_warp == 0
    with pytest.raises(ValueError, match="mel_warp"):
        TrainConfig(mel_warp=0.5)


def test_vocal_tract_warp_moves_a_tone_along_the_mel_axis_and_collate_applies_it():
    from fm_multi.preprocess import log_mel, warp_mel
    from fm_multi.tasks import transcribe

    t = torch.arange(16000) / 16000
    mel = log_mel(torch.sin(2 * math.pi * 1000 * t))
    peak = {a: int(warp_mel(mel, a).mean(1).argmax()) for a in (0.9, 1.0, 1.1)}
    assert peak[0.9] < peak[1.0] < peak[1.1]                # formants up for alpha > 1, down below it
    assert warp_mel(mel, 1.0) is mel and warp_mel(mel, 1.1).shape == mel.shape
    assert warp_mel(mel, 0.95).min() >= mel.min() and warp_mel(mel, 0.95).max() <= mel.max()  # read between bins
    clip = {"audio": torch.sin(2 * math.pi * 1000 * t).numpy(), "text": "a"}
    plain, warped = transcribe.collate([clip]), transcribe.collate([{**clip, "warp": 1.1}])
    assert torch.allclose(warped["mel"][0], warp_mel(plain["mel"][0], 1.1))
    assert torch.equal(warped["targets"], plain["targets"])


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    import random

    import numpy as np

    states = StateFiles(tmp_path, keep_last=2)
    states.save(1, {"rng": rng_state(), "step": 1})
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(StateFiles.load(states.latest())["rng"])        # torch.load(weights_only=True)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_state_files_keep_only_the_last_n(tmp_path):
    states = StateFiles(tmp_path, keep_last=2)
    (tmp_path / ".state_0000009.pt.x.tmp").write_bytes(b"half a write")
    for step in (5, 10, 15):
        states.save(step, {"step": step})
    assert [p.name for p in states.paths()] == ["state_0000010.pt", "state_0000015.pt"]


# --- training runs ----------------------------------------------------------------------------
def test_training_lowers_every_validation_loss_and_writes_the_run_folder(data, tmp_path):
    out = tmp_path / "run"
    even = 'task_weights={"chat":1,"summarize":1,"classify":1,"detect":1,"transcribe":1}'
    train(spec(data, out, 40, "eval_every=40", "checkpoint_every=20", "keep_last=1", "lr=3e-3", even,
               "precision=bf16"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["kind"] == "val"]
    assert [r["step"] for r in val] == [0, 40]
    for task in TASK_NAMES:
        assert val[-1][f"loss_{task}"] < val[0][f"loss_{task}"], task
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(5, 41, 5))
    assert all(r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 for r in train_rows)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["max_steps"] == 40 and config["model"]["n_classify"] == len(CLASSES)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["state_0000040.pt"]
    report = (out / "report.md").read_text()
    assert "## Validation loss" in report and "- precision: bf16 autocast, fp32 weights" in report
    assert {t.dtype for t in load_file(out / "final" / "model.safetensors").values()} == {torch.float32}
    assert list((out / "tb").glob("events.out.tfevents.*"))
    from fm_multi import Pipeline

    pipe = Pipeline.from_pretrained(out / "final", device="cpu")
    assert pipe.classify(Image.new("RGB", (48, 48), (220, 30, 30)))[0][0] in CLASSES
    assert (out / "best" / "model.safetensors").exists()
    assert pipe.speech_lm is not None and (out / "best" / "speech_lm.json.gz").exists()  # fitted on the transcripts
    said = json.loads((data / "speech" / "train.jsonl").read_text().splitlines()[0])["text"]
    assert pipe.speech_lm.logp(said[:-1], said[-1]) > pipe.speech_lm.logp(said[:-1], "'")


def test_non_finite_loss_stops_before_the_update_and_keeps_the_last_state(data, tmp_path, monkeypatch):
    from fm_multi.tasks import transcribe

    out = tmp_path / "run"
    train(spec(data, out, 4, "checkpoint_every=4", "eval_every=100"))
    good = StateFiles.load(out / "checkpoints" / "state_0000004.pt")["model"]
    real_loss = transcribe.loss

    def poisoned(model, batch):
        loss, logs = real_loss(model, batch)
        return loss * float("nan"), logs

    monkeypatch.setattr(transcribe, "loss", poisoned)
    with pytest.raises(NonFiniteLoss, match="transcribe.*state_0000004.pt"):
        train(spec(data, out, 12, "checkpoint_every=4", "eval_every=100"))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["state_0000004.pt"]
    kept = StateFiles.load(out / "checkpoints" / "state_0000004.pt")["model"]
    assert all(torch.equal(good[k], kept[k]) for k in good)


def test_a_resumed_run_keeps_its_own_config(data, tmp_path):
    out = tmp_path / "run"
    train(spec(data, out, 2, "lr=5e-4", "checkpoint_every=2", "eval_every=100"))
    train(RunSpec(preset="tiny", data=str(data), out=str(out), max_steps=3, sets=("eval_every=100",)))
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["lr"] == 5e-4 and config["train"]["batch_size"]["chat"] == 4   # from the first run
    assert config["train"]["max_steps"] == 3                                             # the new override
    assert StateFiles.load(out / "checkpoints" / "state_0000003.pt")["step"] == 3


def test_the_report_names_the_commit_the_session_started_with(tmp_path, monkeypatch):
    from fm_multi import run_records
    from fm_multi.distributed import Context

    monkeypatch.setattr(run_records, "git_commit", lambda: "aaaa")
    log = run_records.RunLog(tmp_path, 0, enabled=True)
    monkeypatch.setattr(run_records, "git_commit", lambda: "bbbb")   # the tree moved on during the run
    model = make_model(make_tokenizer())
    report = run_records.write_report(tmp_path, log, model, 10, 60.0, Context(), 0.0).read_text()
    assert "- git commit: aaaa (this session's code)" in report and "bbbb" not in report


def test_a_wsd_run_keeps_its_stable_state_and_continues_from_it_into_a_new_folder(data, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    train(spec(data, first, 8, "lr_schedule=wsd", "decay_ratio=0.5", "warmup_steps=2", "lr=5e-4",
               "checkpoint_every=2", "keep_last=1", "eval_every=100"))
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == ["stable_0000004.pt", "state_0000008.pt"]
    stable = first / "checkpoints" / "stable_0000004.pt"
    with pytest.raises(ValueError, match="new --out"):        # its later states would be pruned
        train(RunSpec(preset="tiny", data=str(data), out=str(first), max_steps=12, resume=str(stable)))
    train(RunSpec(preset="tiny", data=str(data), out=str(second), max_steps=12, resume=str(stable)))
    config = json.loads((second / "config.json").read_text())["train"]
    assert config["lr"] == 5e-4 and config["lr_schedule"] == "wsd" and config["max_steps"] == 12
    assert (second / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()
    first_rows = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    continued = [r for r in first_rows if r["step"] <= 4]              # the record of the steps it continues
    assert continued[0]["step"] == 0 and rows[:len(continued)] == continued
    assert all(r["step"] > 4 for r in rows[len(continued):])
    lrs = {r["step"]: r["lr"] for r in rows if r["kind"] == "train"}
    assert lrs[5] == pytest.approx(5e-4) and lrs[10] < 5e-4                 # flat until 6 now, then decays
    assert StateFiles.load(second / "checkpoints" / "state_0000012.pt")["step"] == 12


def _cli(data, out, steps, *sets) -> list[str]:
    args = [sys.executable, "-m", "fm_multi.cli", "train", "--preset", "tiny", "--data", str(data),
            "--out", str(out), "--max-steps", str(steps)]
    for s in list(FAST) + list(sets):
        args += ["--set", s]
    return args


def test_resume_after_sigkill_ends_with_the_same_weights(data, tmp_path):
    sets = ("checkpoint_every=6", "eval_every=6", "keep_last=5")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli(data, straight, 24, *sets), check=True, env=env, capture_output=True, cwd=REPO)
    proc = subprocess.Popen(_cli(data, killed, 24, *sets), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "state_0000012.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its second checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists()
    done = subprocess.run(_cli(data, killed, 24, *sets), env=env, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr
    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(killed / "final" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == sorted(set(steps))                             # no step logged twice


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, data: str, out: str, result: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from fm_multi.train import Trainer
    from fm_multi import distributed

    ctx = distributed.setup()
    trainer = Trainer(spec(data, out, 6, "checkpoint_every=6", "eval_every=3"), ctx)
    trainer.run()
    torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, f"{result}.{rank}")
    distributed.teardown(ctx)


def test_two_processes_keep_identical_weights(data, tmp_path):
    import torch.multiprocessing as mp

    result = str(tmp_path / "weights")
    mp.start_processes(_rank_main, args=(2, _free_port(), str(data), str(tmp_path / "run"), result),
                       nprocs=2, start_method="spawn")
    w0, w1 = torch.load(f"{result}.0", weights_only=True), torch.load(f"{result}.1", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    model_cfg, train_cfg, _, _ = resolve_config("tiny", data)
    torch.manual_seed(train_cfg.seed)
    start = FMMulti(model_cfg).state_dict()  # the weights both ranks started from
    assert sum(not torch.equal(w0[k], v) for k, v in start.items()) > len(start) // 2  # they did move
    report = (tmp_path / "run" / "report.md").read_text()
    assert "2 x CPU" in report and "between ranks at the end: 0" in report
    assert math.isfinite(json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["loss_total"])


def _last_train_step(run: Path) -> int:
    try:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or a line half-written
        return 0
    return max([r["step"] for r in rows if r["kind"] == "train"], default=0)


def test_five_sigkills_at_random_moments_lose_nothing(data, tmp_path):
    """Kill the run 5 times at seeded random moments: on reaching a random step, after a random
    part of a step (so mid-step, mid-eval or mid-write). Every kill lands while the run is alive,
    every resume succeeds, no state file is ever half-written, and the end equals a straight run."""
    import random

    sets = ("checkpoint_every=3", "eval_every=6", "keep_last=3", "log_every=1")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.time()
    subprocess.run(_cli(data, straight, 24, *sets), check=True, env=env, capture_output=True, cwd=REPO)
    step_seconds = (time.time() - started) / 24  # an overestimate: it includes start-up
    rng = random.Random(5)
    for target in sorted(rng.sample(range(2, 22), 5)):
        proc = subprocess.Popen(_cli(data, killed, 24, *sets), env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while _last_train_step(killed) < target:
            assert proc.poll() is None and time.time() < deadline, f"run ended before step {target}"
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.5) * step_seconds)
        assert proc.poll() is None, f"the kill after step {target} came too late"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for state in (killed / "checkpoints").glob("state_*.pt"):
            torch.load(state, weights_only=True)  # every visible state file is whole
    assert not (killed / "final").exists()
    done = subprocess.run(_cli(data, killed, 24, *sets), env=env, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(killed / "final" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


# --- warm start (--init-from) -------------------------------------------------------------------
def test_init_from_copies_the_weights_and_starts_a_fresh_schedule(data, tmp_path):
    first = tmp_path / "first"
    train(spec(data, first, 3, "eval_every=100"))
    warm = tmp_path / "warm"
    trainer_spec = spec(data, warm, 2, "eval_every=100", "lr=0")  # lr 0: the weights must stay the source's
    train(RunSpec(**{**trainer_spec.__dict__, "init_from": str(first / "final")}))
    source, result = load_file(str(first / "final" / "model.safetensors")), \
        load_file(str(warm / "final" / "model.safetensors"))
    assert source.keys() == result.keys()
    assert all(torch.equal(source[k], result[k]) for k in source)
    config = json.loads((warm / "config.json").read_text())
    assert config["init_from"] == str(first / "final")
    assert f"- started from the weights of: {first / 'final'}" in (warm / "report.md").read_text()
    assert StateFiles.load(warm / "checkpoints" / "state_0000002.pt")["step"] == 2  # counted from 0, not 3
    further = tmp_path / "further"   # continued into another folder: still started from those weights
    train(RunSpec(**{**spec(data, further, 3, "eval_every=100").__dict__,
                     "resume": str(warm / "checkpoints" / "state_0000002.pt")}))
    assert json.loads((further / "config.json").read_text())["init_from"] == str(first / "final")


def test_init_from_with_a_changed_stem_copies_everything_else(data, tmp_path, capsys):
    first = tmp_path / "first"
    train(spec(data, first, 1, "eval_every=100", "model.vision_stem=patch"))
    warm = tmp_path / "warm"
    s = spec(data, warm, 1, "eval_every=100", "lr=0", "model.vision_stem=conv")
    train(RunSpec(**{**s.__dict__, "init_from": str(first / "final")}))
    err = capsys.readouterr().err
    assert "freshly initialised: vision.to_patches" in err
    source, result = load_file(str(first / "final" / "model.safetensors")), \
        load_file(str(warm / "final" / "model.safetensors"))
    shared = [k for k in source if not k.startswith("vision.to_patches")]
    assert len(shared) >= 40 and all(torch.equal(source[k], result[k]) for k in shared)
    assert json.loads((warm / "final" / "config.json").read_text())["model_config"]["vision_stem"] == "conv"


def test_init_from_into_a_deeper_model_starts_where_the_checkpoint_was(data, tmp_path, capsys):
    from fm_multi.checkpoint import load_checkpoint

    first = tmp_path / "first"
    train(spec(data, first, 2, "eval_every=100"))
    deep = tmp_path / "deep"
    s = spec(data, deep, 1, "eval_every=100", "lr=0", "model.n_layer=4")    # tiny has 2 blocks
    train(RunSpec(**{**s.__dict__, "init_from": str(first / "final")}))
    assert "backbone blocks 2-3 are new and start as identity" in capsys.readouterr().err
    source, grown = load_checkpoint(first / "final")[0], load_checkpoint(deep / "final")[0]
    assert len(grown.backbone.blocks) == 4 and len(source.backbone.blocks) == 2
    torch.manual_seed(0)
    pixels, idx = torch.randn(2, 3, 32, 32), torch.randint(0, 200, (2, 9))
    with torch.no_grad():
        assert torch.allclose(grown.forward_classify(pixels), source.forward_classify(pixels), atol=1e-6)
        assert torch.allclose(grown.forward_text(idx), source.forward_text(idx), atol=1e-6)
    # the new blocks are not dead: one step at a learning rate moves their projections off zero
    moved = tmp_path / "moved"
    train(RunSpec(**{**spec(data, moved, 1, "eval_every=100", "model.n_layer=4").__dict__,
                     "init_from": str(first / "final")}))
    weights = load_file(str(moved / "final" / "model.safetensors"))
    assert weights["backbone.blocks.3.mlp.proj.weight"].abs().sum() > 0


def test_init_from_keeps_the_checkpoints_tokenizer_when_the_data_has_another(data, tmp_path, capsys):
    """Data built on another machine has another BPE vocabulary; fine-tuning encodes its text with
    the checkpoint's, and so does the run when it resumes."""
    from fm_multi.data.tokenizer import train_tokenizer

    first = tmp_path / "first"
    train(spec(data, first, 1, "eval_every=100"))
    other = tmp_path / "other_data"
    shutil.copytree(data, other)
    train_tokenizer(["another corpus, another machine: " + w for w in ("apt", "dpkg", "man", "sox")] * 50,
                    280).save(str(other / "tokenizer" / "tokenizer.json"))
    source = (first / "final" / "tokenizer.json").read_text()
    warm = tmp_path / "warm"
    s = spec(other, warm, 2, "eval_every=100", "checkpoint_every=1")
    train(RunSpec(**{**s.__dict__, "init_from": str(first / "final")}))
    assert "differs from the tokenizer of" in capsys.readouterr().err
    assert (warm / "final" / "tokenizer.json").read_text() == source
    assert json.loads((warm / "final" / "config.json").read_text())["model_config"]["vocab_size"] == \
        json.loads((first / "final" / "config.json").read_text())["model_config"]["vocab_size"]
    (first / "final" / "tokenizer.json").unlink()  # the source is gone; the run keeps its own copy
    train(RunSpec(**{**spec(other, warm, 3, "eval_every=100").__dict__, "init_from": str(first / "final")}))
    assert StateFiles.load(warm / "checkpoints" / "state_0000003.pt")["step"] == 3
    assert (warm / "final" / "tokenizer.json").read_text() == source


def test_init_from_a_checkpoint_that_split_numbers_by_bpe_reads_them_digit_by_digit(data, tmp_path, capsys):
    from tokenizers import Tokenizer, pre_tokenizers

    first = tmp_path / "first"
    train(spec(data, first, 1, "eval_every=100"))
    old = Tokenizer.from_file(str(first / "final" / "tokenizer.json"))
    old.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)   # as checkpoints had it
    old.save(str(first / "final" / "tokenizer.json"))
    warm = tmp_path / "warm"
    train(RunSpec(**{**spec(data, warm, 2, "eval_every=100").__dict__, "init_from": str(first / "final")}))
    assert "reads numbers digit by digit" in capsys.readouterr().err
    new = Tokenizer.from_file(str(warm / "final" / "tokenizer.json"))
    assert new.get_vocab() == old.get_vocab()
    assert [new.decode([i]) for i in new.encode("12345").ids] == list("12345")


def test_a_fresh_run_on_data_whose_tokenizer_merged_digits_reads_them_one_by_one(data, tmp_path, capsys):
    from tokenizers import Tokenizer, pre_tokenizers

    old_data = tmp_path / "old_data"
    shutil.copytree(data, old_data)
    old = Tokenizer.from_file(str(old_data / "tokenizer" / "tokenizer.json"))
    old.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)      # as builds had it
    old.save(str(old_data / "tokenizer" / "tokenizer.json"))
    run = tmp_path / "run"
    train(spec(old_data, run, 1, "eval_every=100"))
    assert "reads numbers digit by digit" in capsys.readouterr().err
    new = Tokenizer.from_file(str(run / "final" / "tokenizer.json"))
    assert new.get_vocab() == old.get_vocab()
    assert [new.decode([i]) for i in new.encode("2129").ids] == list("2129")
    train(spec(old_data, run, 2, "eval_every=100"))                           # resuming: no second note
    assert "reads numbers digit by digit" not in capsys.readouterr().err


def test_init_from_refuses_a_checkpoint_with_other_labels(data, tmp_path):
    first = tmp_path / "first"
    train(spec(data, first, 1, "eval_every=100"))
    labels = json.loads((first / "final" / "labels.json").read_text())
    labels["classify"] = list(reversed(labels["classify"]))
    (first / "final" / "labels.json").write_text(json.dumps(labels))
    s = spec(data, tmp_path / "warm", 1, "eval_every=100")
    with pytest.raises(ValueError, match="classify labels differ"):
        train(RunSpec(**{**s.__dict__, "init_from": str(first / "final")}))
