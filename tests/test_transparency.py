"""Transparency: explanations, calibration, slices, robustness and the measured model card.

A random tiny model over the `small_data` build: the numbers are meaningless, but their shapes,
ranges and bookkeeping are what is checked here (heat maps the size of the input, one probability
per generated token, temperatures that undo over-confidence, a card whose numbers are eval's).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from fm_multi import calibrate, examples, explain, robustness
from fm_multi.card_text import cell
from fm_multi.checkpoint import save_checkpoint
from fm_multi.cli import main as cli_main
from fm_multi.config import preset
from fm_multi.model import FMMulti
from fm_multi.pipeline import Pipeline
from fm_multi.preprocess import image_to_tensor
from fm_multi.tasks import classify as classify_task

LIMIT = 6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(small_data, tmp_path_factory):
    """A random tiny model with small_data's tokenizer and labels, so eval and the card can run."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(small_data / "tokenizer" / "tokenizer.json"))
    labels = json.loads((small_data / "labels.json").read_text())
    torch.manual_seed(0)
    cfg = preset("tiny", vocab_size=tok.get_vocab_size(), n_classify=len(labels["classify"]),
                 n_detect=len(labels["detect"]))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", FMMulti(cfg), tok, labels)


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return Pipeline.from_pretrained(checkpoint, device="cpu")


def _picture(w: int = 70, h: int = 50) -> Image.Image:
    return Image.fromarray((np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8))


# --- explanations -----------------------------------------------------------------------------
def test_heat_maps_have_the_input_size(pipe):
    img = _picture()
    overlay, top = pipe.explain_classify(img)
    assert overlay.size == img.size and top == pipe.classify(img)
    dets = pipe.explain_detect(img, threshold=0.0, max_boxes=3)
    assert 1 <= len(dets) <= 3
    assert all(d["heatmap"].size == img.size and "patch" not in d for d in dets)
    assert [d["box"] for d in dets] == [d["box"] for d in pipe.detect(img, threshold=0.0)[:3]]


def test_alignment_frames_lie_within_the_audio_tokens(checkpoint, tmp_path):
    pipe = Pipeline.from_pretrained(checkpoint, device="cpu")
    with torch.no_grad():
        pipe.model.ctc_head.fc.weight.mul_(200)  # a sharp random head emits many letters
    wav = tmp_path / "a.wav"
    sf.write(wav, (np.random.default_rng(1).standard_normal(16_000) * 0.1).astype(np.float32), 16_000)
    r = pipe.transcribe_detailed(str(wav))
    n_tokens = -(-r["mel"].shape[1] // r["frames_per_token"])
    assert r["alignment"] and all(0 <= a["frame"] < n_tokens and 0 <= a["prob"] <= 1 for a in r["alignment"])
    frames = [a["frame"] for a in r["alignment"]]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)
    words = explain.word_confidences(r["alignment"])
    assert " ".join(w["word"] for w in words) == " ".join(r["text"].split())
    assert all(0 <= d <= 1 for _, d in explain.word_highlights(words))
    from fm_multi import plots

    assert plots.alignment_image(r["mel"], r["alignment"], r["frames_per_token"], r["frame_seconds"]).mode == "RGB"


def test_one_probability_per_generated_token(pipe):
    msgs = [{"role": "user", "content": "What is 2 plus 3?"}]
    text, probs = "", []
    for text, probs in pipe.chat_stream_detailed(msgs, temperature=0.0, repetition_penalty=1.0, max_new_tokens=8):
        pass
    assert 1 <= len(probs) <= 8 and all(0 <= p <= 1 for _, p in probs)
    assert "".join(t for t, _ in probs) == text
    scored = pipe.chat_token_probs(msgs + [{"role": "assistant", "content": text}])
    if [t for t, _ in scored] == [t for t, _ in probs]:  # re-encoding gave the same tokens back
        assert [p for _, p in scored] == pytest.approx([p for _, p in probs], abs=1e-4)
    summary, sprobs = pipe.summarize_detailed("the quick brown fox jumps over the lazy dog", max_new_tokens=6)
    assert len(sprobs) <= 6 and all(0 <= p <= 1 for _, p in sprobs)
    marks = explain.token_highlights([("a", 0.9), ("b", 0.1), ("c", 0.29)])
    assert marks == [("a", None), ("b", 0.9), ("c", 0.71)]


# --- calibration ------------------------------------------------------------------------------
def test_temperature_scaling_undoes_over_confidence():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(4000, 10, generator=g) * 1.5
    labels = torch.multinomial(true.softmax(-1), 1, generator=g)[:, 0]
    sharp = true * 4  # the same ranking, four times too sure
    t = calibrate.fit_temperature(sharp, labels)
    assert t == pytest.approx(4.0, rel=0.15)
    nll = torch.nn.functional.cross_entropy
    assert nll(sharp / t, labels) < nll(sharp, labels)
    summary = calibrate._summary("multi", sharp, labels, t)
    assert summary["after"]["ece"] < summary["before"]["ece"] and summary["after"]["nll"] < summary["before"]["nll"]
    z = torch.randn(4000, generator=g)
    hits = torch.bernoulli(z.sigmoid(), generator=g)
    assert calibrate.fit_binary_temperature(z * 3, hits) == pytest.approx(3.0, rel=0.15)


def test_ece_on_a_hand_made_example():
    # bins of width 1/15: 0.95 -> (14/15, 1], 0.65 -> (9/15, 10/15], 0.25 -> (3/15, 4/15]
    conf = torch.tensor([0.95, 0.95, 0.65, 0.65, 0.25])
    correct = torch.tensor([True, False, True, True, False])
    rel = calibrate.reliability(conf, correct)
    # 2/5 * |0.5 - 0.95| + 2/5 * |1 - 0.65| + 1/5 * |0 - 0.25|
    assert rel["ece"] == pytest.approx(0.18 + 0.14 + 0.05)
    filled = {i: b for i, b in enumerate(rel["bins"]) if b["n"]}
    assert set(filled) == {3, 9, 14} and filled[14]["accuracy"] == 0.5 and len(rel["bins"]) == 15


def test_boxes_match_once_per_object_and_class():
    gt = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30]])
    dets = [{"label": "cat", "score": 0.9, "box": [0, 0, 10, 10]},
            {"label": "cat", "score": 0.8, "box": [0, 0, 10, 9]},       # a duplicate: a false alarm
            {"label": "dog", "score": 0.7, "box": [20, 20, 30, 30]},    # wrong class
            {"label": "cat", "score": 0.6, "box": [21, 21, 31, 31]}]    # IoU 0.68 with the second cat
    assert calibrate.match_boxes(dets, gt, ["cat", "cat"]) == [True, False, False, True]
    assert calibrate.match_boxes([], gt, ["cat", "cat"]) == []


def test_pipeline_applies_stored_temperatures(checkpoint, tmp_path):
    import shutil

    folder = shutil.copytree(checkpoint, tmp_path / "c")
    calibrate.save_temperatures(folder, {"classify": 3.0, "detect": 2.0})
    assert "model_config" in json.loads((folder / "config.json").read_text())
    hot, cold = Pipeline.from_pretrained(checkpoint, device="cpu"), Pipeline.from_pretrained(folder, device="cpu")
    assert cold.temperatures == {"classify": 3.0, "detect": 2.0}
    img = _picture()
    views = [image_to_tensor(v, hot.config.image_size)[None] for v in (img, classify_task.centre_crop(img))]
    logits = classify_task.predict(hot.model, *views).detach()
    expected = (logits / 3.0).softmax(-1).max().item()
    assert cold.classify(img, 1)[0][1] == pytest.approx(expected, abs=1e-5)
    assert cold.is_unsure([("x", 0.2)]) and not cold.is_unsure([("x", 0.31)])
    assert cold.unsure_message([("x", 0.2)]) == "I'm not sure (best guess: x, 20%)"
    assert cold.unsure_message([("x", 0.9)]) is None


# --- slices, robustness, the card -------------------------------------------------------------
def test_corruptions_change_inputs_by_their_severity():
    rng = np.random.default_rng(0)
    img = _picture(64, 64)
    assert robustness.gaussian_noise(img, 0.0, rng) is img and robustness.jpeg(img, None) is img
    noisy = np.asarray(robustness.gaussian_noise(img, 0.2, rng), dtype=np.float32)
    assert 30 < np.abs(noisy - np.asarray(img, dtype=np.float32)).mean() < 60
    audio = np.sin(np.linspace(0, 800, 16_000)).astype(np.float32)
    noise = robustness.add_noise(audio, 10, rng) - audio
    assert 10 * np.log10(np.mean(audio ** 2) / np.mean(noise ** 2)) == pytest.approx(10, abs=0.3)
    assert len(robustness.change_rate(audio, 1.25)) == pytest.approx(16_000 / 1.25, abs=2)


def test_card_numbers_are_eval_numbers(checkpoint, small_data, tmp_path, capsys):
    eval_json, out = tmp_path / "eval.json", tmp_path / "card"
    limit = f"{LIMIT},classify={LIMIT + 2}"      # per task: classification measured on more pictures
    assert cli_main(["eval", "--checkpoint", str(checkpoint), "--data", str(small_data), "--limit", limit,
                     "--json", str(eval_json)]) == 0
    notes = tmp_path / "notes.md"
    notes.write_text("Trained for 3 steps; a random model.")
    stages = [_stage_folder(tmp_path / "stage1", 40, None), _stage_folder(tmp_path / "stage2", 30, "stage1/final")]
    assert cli_main(["card", "--checkpoint", str(checkpoint), "--data", str(small_data), "--limit", limit,
                     "--out", str(out), "--notes", str(notes), "--run", str(stages[0]), "--run", str(stages[1])]) == 0
    evaluated = json.loads(eval_json.read_text())["results"]
    measured = json.loads((out / "measurements.json").read_text())
    assert measured["eval"]["results"] == evaluated
    card = (out / "README.md").read_text()
    c = evaluated["classify"]["all"]
    assert c["n"] == LIMIT + 2 and evaluated["detect"]["all"]["n"] == LIMIT
    assert f"| all | {c['n']} | {c['top1']:.4f} | {c['top5']:.4f} |" in card
    assert f"({LIMIT} examples per task; classify: {LIMIT + 2} examples)" in card
    assert f"--limit {limit} --json eval.json" in card
    for heading in ("## Intended use", "## Limitations", "## Quality targets", "## Training data", "## Evaluation",
                    "## Worst slices", "## Calibration", "## Robustness", "model-index:"):
        assert heading in card
    # every target against its measurement; a random model misses them, by the measured margin
    cer = evaluated["transcribe"]["trained_voices"]["cer"]
    assert f"| speech CER, trained voices | <= 0.1 | {cer:.3f} | missed by {cer - 0.1:.3f} |" in card
    loops = evaluated["chat"]["all"]["looping_sampled"]      # no loops is the goal: 0 meets it
    verdict = "met" if loops == 0 else f"missed by {loops:.3f}"
    assert f"| chat answers that loop, sampled as the app samples | <= 0 | {loops:.3f} | {verdict} |" in card
    assert "Trained for 3 steps; a random model." in card
    # the app's example inputs, answered as the app answers them (calibrated, greedy)
    pipe = Pipeline.from_pretrained(checkpoint)
    assert [r["tab"] for r in measured["examples"]] == ["Chat"] * len(examples.CHAT) + ["Summarize"] + [
        "Classify"] * len(examples.CLASSIFY) + ["Detect"] + ["Speech-to-text"] * len(examples.TRANSCRIBE)
    reply = pipe.chat([{"role": "user", "content": "What is 12 plus 7?"}], temperature=0.0)
    assert f"| Chat | What is 12 plus 7? | 19 | {cell(reply or '(empty)')} |" in card
    label, p = pipe.classify(examples.path("dog.png"), top_k=1)[0]
    assert f"| Classify | dog.png | dog | {label} ({p:.0%}) |" in card
    shown = pipe.detect(examples.path("scene.png"), threshold=examples.DETECT_THRESHOLD)  # as the tab shows it
    detect_row = next(r for r in measured["examples"] if r["tab"] == "Detect")
    assert detect_row["output"] == ", ".join(f"{b['label']} ({b['score']:.2f})" for b in shown) or (
        not shown and detect_row["output"].startswith(f"no box scores {examples.DETECT_THRESHOLD} or more"))
    heard = pipe.transcribe(examples.path("hello_world.wav"))
    assert f"| Speech-to-text | hello_world.wav | hello world this is a test | {cell(heard or '(empty)')} |" in card
    for name in ("reliability_classify.png", "robustness_classify.png", "robustness_detect.png",
                 "robustness_transcribe.png"):
        assert (out / name).stat().st_size > 1000 and f"]({name})" in card
    assert "classify" in json.loads((checkpoint / "config.json").read_text())["calibration"]
    # the training stages, in order, each with its report; one loss curve across both
    assert "### Stage 1 (steps 0 onwards)" in card and "### Stage 2 (steps 40 onwards)" in card
    assert card.index("- steps: 40") < card.index("- started from the weights of: stage1/final")
    assert (out / "loss_curve.png").stat().st_size > 1000 and "](loss_curve.png)" in card
    assert f"--run {stages[0]} --run {stages[1]}" in card
    assert [(s["folder"], s["first_step"], s["rows"]) for s in measured["training"]] == [
        (str(stages[0]), 0, 5), (str(stages[1]), 40, 4)]
    # the stages travel with the card: a later stage's card needs only the new run folder
    from fm_multi.card import training_history

    later = training_history([out, _stage_folder(tmp_path / "stage3", 20, "stage2/final")])
    assert [(s["folder"], s["first_step"]) for s in later] == [(str(stages[0]), 0), (str(stages[1]), 40),
                                                             (str(tmp_path / "stage3"), 70)]
    assert later[1]["facts"]["started from the weights of"] == "stage1/final"
    # the first training row of each 50 steps, and the last
    assert [(r["step"], r["kind"]) for r in later[0]["rows"]] == [(0, "val"), (10, "train"), (40, "train")]
    # slices: every breakdown the data allows
    assert {"by_style", "by_class", "by_background"} <= set(evaluated["classify"])
    assert "by_source" in evaluated["transcribe"] and "by_source" in evaluated["summarize"]
    assert all("perplexity" in v for v in evaluated["chat"]["by_skill"].values())
    # robustness: one point per severity of every corruption; the clean point is eval's number
    # (for detection, the detector alone's: its curves skip the second look)
    for task, curves in measured["robustness"].items():
        table = robustness.AUDIO_CORRUPTIONS if task == "transcribe" else robustness.IMAGE_CORRUPTIONS
        metric = robustness.METRIC[task]
        assert {c: [p["severity"] for p in ps] for c, ps in curves.items()} == table
        assert all(0 <= p[metric] for ps in curves.values() for p in ps)
        clean = evaluated[task].get("detector_only", evaluated[task]["all"])[metric]
        assert all(p[metric] == clean for c, ps in curves.items() for p in ps if p["severity"] == robustness.CLEAN[c])


def _stage_folder(folder, steps: int, init_from: str | None):
    """A run folder as `fm-multi train` leaves it: report.md facts and metrics.jsonl, every 10 steps."""
    folder.mkdir()
    facts = [f"- steps: {steps}"] + ([f"- started from the weights of: {init_from}"] if init_from else [])
    (folder / "report.md").write_text("# Training report\n\n" + "\n".join(facts) + "\n\n## Validation loss\n")
    rows = [{"step": 0, "kind": "val", "loss_chat": 5.0, "loss_classify": 4.0, "loss_total": 9.0}]
    rows += [{"step": s, "kind": "train", "loss_chat": 5.0 - s / 100, "loss_classify": 4.0 - s / 50}
             for s in range(10, steps + 1, 10)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_compacting_a_stage_again_keeps_its_curve():
    from fm_multi.card import KEEP_STEPS, compact

    rows = [{"step": s, "kind": "train", "loss_chat": 1 / s, "lr": 0.1} for s in range(10, 1001, 10)]
    rows.insert(50, {"step": 500, "kind": "val", "loss_chat": 0.5})
    once = compact({"folder": "x", "rows": rows})
    assert compact(once) == once                    # a stage carried from card to card is not thinned
    kept = [r["step"] for r in once["rows"] if r["kind"] == "train"]
    assert kept == [10] + list(range(KEEP_STEPS, 1001, KEEP_STEPS))
    assert [r for r in once["rows"] if r["kind"] == "val"] == [{"step": 500, "kind": "val", "loss_chat": 0.5}]
    assert all("lr" not in r for r in once["rows"])


def test_card_lists_each_source_of_a_data_part(tmp_path):
    from fm_multi.card import data_info

    (tmp_path / "classify").mkdir()
    (tmp_path / "classify" / "DATASET_CARD.md").write_text(
        "# classify\n\n## Sources and licences\n\n- Noto (OFL-1.1)\n- Twemoji (CC BY 4.0, credit \"Twitter\")\n"
        "\n## Format\n\n- not a source\n")
    (tmp_path / "speech").mkdir()
    (tmp_path / "speech" / "DATASET_CARD.md").write_text(
        "## Sources and licences\n\nflite (BSD-style),\nespeak-ng (GPL-3+).\n")
    sources = data_info(tmp_path)["sources"]
    assert sources == {"classify": 'Noto (OFL-1.1); Twemoji (CC BY 4.0, credit "Twitter")',
                       "speech": "flite (BSD-style), espeak-ng (GPL-3+)."}


def test_card_refuses_a_run_folder_without_metrics(checkpoint, small_data, tmp_path):
    from fm_multi.card import build_card

    with pytest.raises(FileNotFoundError, match="not a training run folder .* nor a carded checkpoint"):
        build_card(checkpoint, small_data, limit=LIMIT, out=tmp_path / "card", runs=[tmp_path])
    assert not (tmp_path / "card" / "README.md").exists()


def test_detection_slices_on_exact_boxes(small_data):
    from fm_multi import metrics

    ann = small_data / "detect" / "val" / "annotations.json"
    coco = json.loads(ann.read_text())
    exact = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
             for a in coco["annotations"]]
    ids = [im["id"] for im in coco["images"]]
    s = metrics.coco_slices(coco, exact, ids)
    assert s["all"] == metrics.coco_map(coco, exact, ids) == {"map_50_95": pytest.approx(1.0),
                                                              "map_50": pytest.approx(1.0)}
    assert s["by_class"] and all(v["ap_50"] == pytest.approx(1.0) for v in s["by_class"].values())
    assert s["by_style"] and all(v["map_50"] == pytest.approx(1.0) for v in s["by_style"].values())
    assert sum(v["n"] for v in s["by_background"].values()) == len(ids)


# --- the app ----------------------------------------------------------------------------------
def test_app_keeps_exactly_the_five_api_names(pipe):
    from fm_multi.ui.app import build_demo

    fns = build_demo(pipe).fns.values()
    assert {f.api_name for f in fns if f.api_visibility == "public"} == {"chat", "summarize", "classify", "detect",
                                                                         "transcribe"}
    explainers = [f for f in fns if f.fn and f.fn.__name__.startswith("explain")]
    assert len(explainers) == 10 and all(f.api_visibility == "private" for f in explainers)  # 2 triggers x 5 tabs


def test_model_tab_lists_the_card_figures(tmp_path):
    from fm_multi.ui.model_tab import card_figures, with_captions

    Image.new("RGB", (4, 4)).save(tmp_path / "robustness_classify.png")
    card = "# x\n![classify robustness](robustness_classify.png)\n![gone](missing.png)\n"
    figures = card_figures(card, tmp_path)
    assert figures == [(str(tmp_path / "robustness_classify.png"), "classify robustness")]
    body = with_captions(card, figures)
    assert "*(figure: classify robustness, in the gallery below)*" in body and "![gone](missing.png)" in body
