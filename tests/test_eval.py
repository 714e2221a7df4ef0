"""Evaluation: metric definitions on hand-worked cases, the seen/unseen splits, and the eval command."""
from __future__ import annotations

import contextlib
import json

import pytest
import torch

from fm_multi import distributed, evaluate, metrics, streams
from fm_multi.cli import main as cli_main
from fm_multi.config import CTC_ALPHABET, TASK_NAMES, preset
from fm_multi.tasks import transcribe as transcribe_task
from fm_multi.tasks.language import TextCodec
from helpers import CLASSES, make_checkpoint, make_model, make_tokenizer
from train_data import make_data_dir


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data") / "d")


# --- metric definitions -----------------------------------------------------------------------
def test_rouge_l_is_the_f1_of_the_longest_common_subsequence():
    # LCS "the cat on the mat" = 5 words of 6 on both sides
    assert metrics.rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    assert metrics.rouge_l("a b c d", "a b") == pytest.approx(2 * 0.5 * 1 / 1.5)  # P 1/2, R 1
    assert metrics.rouge_l("", "the cat") == 0.0 and metrics.rouge_l("dog", "cat") == 0.0
    assert metrics.rouge_l("x y z", "x y z") == 1.0


def test_edit_distance_and_corpus_error_rates():
    assert metrics.edit_distance("kitten", "sitting") == 3
    assert metrics.edit_distance([], ["a", "b"]) == 2
    # one substitution + one insertion over 3 reference words
    assert metrics.error_rate(["a b c"], ["a x c d"], "word") == pytest.approx(2 / 3)
    # corpus level: (1 + 0) edits over (3 + 5) characters, not the mean of per-clip rates
    assert metrics.error_rate(["abc", "hello"], ["abd", "hello"], "char") == pytest.approx(1 / 8)


def test_answer_normalisation_and_lead_baselines():
    assert metrics.normalize_answer("  Five .") == metrics.normalize_answer("five") == "five"
    assert metrics.normalize_answer("w-a-s-h") == "w-a-s-h"
    assert metrics.normalize_answer("12") != metrics.normalize_answer("1 2")
    assert metrics.lead_sentence("Tools for X. They do Y! More.") == "Tools for X."
    assert metrics.lead_words("one  two three four", 2) == "one two"


def test_top_k_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3]])
    assert metrics.top_k_correct(logits, torch.tensor([1, 2]), 1).tolist() == [True, False]
    assert metrics.top_k_correct(logits, torch.tensor([1, 2]), 2).tolist() == [True, True]


def test_coco_map_is_one_for_exact_boxes_and_lower_for_loose_ones(data):
    coco = metrics.load_coco(data / "detect" / "val" / "annotations.json")
    gt = coco["annotations"]
    ids = [a["image_id"] for a in gt]
    exact = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9} for a in gt]
    assert metrics.coco_map(coco, exact, ids) == {"map_50_95": pytest.approx(1.0), "map_50": pytest.approx(1.0)}
    loose = [{**d, "bbox": [d["bbox"][0] + 0.15 * d["bbox"][2], *d["bbox"][1:]]} for d in exact]  # IoU ~0.74
    m = metrics.coco_map(coco, loose, ids)
    assert m["map_50"] == pytest.approx(1.0) and m["map_50_95"] < 0.8
    wrong_class = [{**d, "category_id": d["category_id"] % len(CLASSES) + 1} for d in exact]
    assert metrics.coco_map(coco, wrong_class, ids)["map_50"] == 0.0
    assert metrics.coco_map(coco, [], ids)["map_50"] == 0.0
    # with the labels ignored, right places score whatever their class; loose boxes still lose at .75+
    assert metrics.coco_map_any_class(coco, wrong_class, ids)["map_50"] == pytest.approx(1.0)
    assert metrics.coco_map_any_class(coco, loose, ids)["map_50_95"] < 0.8
    shifted = [{**d, "bbox": [d["bbox"][0] + d["bbox"][2], *d["bbox"][1:]]} for d in exact]   # IoU 0
    assert metrics.coco_map_any_class(coco, shifted, ids)["map_50"] == 0.0
    assert metrics.coco_map_any_class(coco, [], ids)["map_50"] == 0.0


# --- seen vs unseen splits, with stand-in models that are right exactly where we say --------------
class Scripted(torch.nn.Module):
    """Returns prepared outputs in call order; eval passes batches in the order of `indices`."""

    def __init__(self, outputs):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # so eval can find a device
        self.outputs = list(outputs)

    def forward_classify(self, pixels):  # pictures, centre views, then the mirrors of both (classify.predict)
        n = pixels.size(0) // 4
        out, self.outputs = self.outputs[:n], self.outputs[n:]
        return torch.stack(out * 4)

    def forward_transcribe(self, mel, mel_lengths):
        out, self.outputs = self.outputs[:mel.size(0)], self.outputs[mel.size(0):]
        T = max(o.size(0) for o in out)
        logits = torch.stack([torch.cat([o, torch.zeros(T - o.size(0), o.size(1))]) for o in out])
        return logits, torch.tensor([o.size(0) for o in out])


def test_classification_accuracy_splits_trained_and_unseen_styles(data):
    val = streams.dataset("classify", data, "val")
    idx = list(range(len(val)))
    C = len(CLASSES)
    outputs = [torch.nn.functional.one_hot(torch.tensor(y if val.styles[i] == "plain" else (y + 1) % C), C).float()
               for i, (_, y) in zip(idx, val.samples)]
    collate = streams.collate_fn("classify", None, preset("tiny", n_classify=C, n_detect=C), inference=True)
    res = evaluate.eval_classify(Scripted(outputs), val, idx, collate, 5, trained_styles={"plain"})
    assert res["trained_styles"]["top1"] == 1.0 and res["heldout_styles"]["top1"] == 0.0
    assert res["all"]["top1"] == pytest.approx(0.5) and res["all"]["n"] == len(val)
    assert set(res["by_style"]) == {"plain", "unseen"}


def _spell(text: str) -> torch.Tensor:
    """CTC logits (2 frames per character: symbol then blank) that greedy-decode to `text`."""
    ids = transcribe_task.encode_text(text)
    frames = torch.zeros(2 * len(ids), len(CTC_ALPHABET))
    for k, s in enumerate(ids):
        frames[2 * k, s] = frames[2 * k + 1, 0] = 10.0
    return frames


def test_speech_error_rates_split_trained_and_heldout_voices(data):
    val = streams.dataset("transcribe", data, "val")
    idx = list(range(len(val)))
    rows = [val.rows[i] for i in idx]
    outputs = [_spell("") if r["heldout_voice"] else _spell(r["text"]) for r in rows]
    outputs = [o if o.numel() else torch.zeros(4, len(CTC_ALPHABET)) for o in outputs]
    res = evaluate.eval_transcribe(Scripted(outputs), val, idx, streams.collate_fn("transcribe", None, None), 4)
    assert res["trained_voices"]["cer"] == 0.0 and res["trained_voices"]["wer"] == 0.0
    assert res["heldout_voices"]["wer"] == 1.0 and res["heldout_voices"]["cer"] == 1.0  # all deletions
    assert res["by_voice"]["voice_c"]["heldout"] is True
    assert res["all"]["n"] == len(val)


def test_repeated_ngram_share_finds_loops():
    assert metrics.repeated_ngram_share("one two three four five") == 0.0
    assert metrics.repeated_ngram_share("42") == 0.0
    # "a b a b a b": 3-grams aba bab aba bab -> 2 distinct of 4
    assert metrics.repeated_ngram_share("a b a b a b") == pytest.approx(0.5)
    assert metrics.repeated_ngram_share("the the the the the the the") == pytest.approx(0.8)  # 1 of 5 distinct


def test_chat_eval_scores_follow_ups_and_loops_per_skill():
    tok = make_tokenizer()

    def conv(skill, turns, answer, checkable=True):
        messages = []
        for q, a in turns:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return {"messages": messages, "skill": skill, "checkable": checkable, "given": answer}

    val = [conv("arithmetic", [("What is 2 + 3?", "5")], "5."),
           conv("arithmetic", [("What is 2 + 3?", "5"), ("And if you add 3 to that?", "8")], "8"),
           conv("arithmetic", [("What is 4 + 4?", "8"), ("And times 2?", "16")], "12"),
           conv("definition", [("Define 'cat'.", "A small feline.")], "a cat is a cat is a cat is a cat",
                checkable=False)]

    class Pipe:
        model = make_model(tok)

        def chat(self, context, **kw):
            given = next(r["given"] for r in val if r["messages"][:len(context)] == context
                         and len(r["messages"]) == len(context) + 1)
            if "temperature" in kw:                    # the greedy answer that exact match scores
                assert kw["temperature"] == 0 and kw["repetition_penalty"] == 1.0
                return given
            assert kw["seed"] is not None              # sampled with the app's defaults: loops once
            return "5 and 5 and 5 and 5 and 5" if given == "5." else given

    collate = streams.collate_fn("chat", TextCodec(tok), Pipe.model.config)
    res = evaluate.eval_chat(Pipe(), val, list(range(len(val))), collate, 2)
    arith = res["by_skill"]["arithmetic"]
    assert arith["exact_match"] == pytest.approx(2 / 3) and arith["n_checkable"] == 3
    assert arith["follow_up_exact_match"] == pytest.approx(1 / 2) and arith["n_follow_up"] == 2
    assert arith["looping"] == 0.0 and arith["looping_sampled"] == pytest.approx(1 / 3)
    assert res["by_skill"]["definition"]["looping"] == 1.0 and res["by_skill"]["definition"]["exact_match"] is None
    assert res["all"]["looping"] == pytest.approx(1 / 4) and res["all"]["n_follow_up"] == 2
    assert res["all"]["looping_sampled"] == pytest.approx(2 / 4)
    by_digits = res["by_arithmetic_answer_digits"]                   # right answers 5, 8 and 16
    assert list(by_digits) == ["1", "2"]
    assert by_digits["1"]["exact_match"] == 1.0 and by_digits["1"]["n_checkable"] == 2
    assert by_digits["2"]["exact_match"] == 0.0 and by_digits["2"]["n"] == 1


# --- the command ------------------------------------------------------------------------------
def test_limit_is_one_number_or_per_task():
    import argparse

    assert evaluate.parse_limit("500") == {"*": 500}
    limit = evaluate.parse_limit("100, classify=0,detect=500")
    assert limit == {"*": 100, "classify": 0, "detect": 500}
    assert [evaluate.limit_for(limit, t) for t in ("chat", "classify", "detect")] == [100, None, 500]
    assert evaluate.limit_for(7, "chat") == 7 and evaluate.limit_for(0, "chat") is None
    assert evaluate.limit_for({"classify": 9}, "chat") is None          # no "*": every other task in full
    assert evaluate.parse_limit(evaluate.limit_text(limit)) == limit
    assert evaluate.limit_text(None) == "0" and evaluate.limit_text(200) == "200"
    for bad, why in (("classfy=3", "unknown task 'classfy'"), ("-1", "not N or TASK=N"), ("ten", "not N")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            evaluate.parse_limit(bad)


def test_eval_command_reports_all_five_tasks(data, tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "eval.json"
    assert cli_main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--limit", "3,classify=5",
                     "--json", str(out)]) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())["results"]
    assert list(report) == list(TASK_NAMES)
    for task in TASK_NAMES:
        assert task in table
        assert 0 < report[task]["all"]["n"] <= (5 if task == "classify" else 3)
    assert report["classify"]["all"]["n"] == 5
    assert report["chat"]["all"]["perplexity"] > 1
    assert 0 <= report["summarize"]["all"]["rouge_l"] <= 1
    assert 0 <= report["summarize"]["all"]["rouge_l_no_copy"] <= 1   # the summaries without the copy bias
    assert 0 <= report["summarize"]["all"]["rouge_l_greedy"] <= 1    # one beam instead of the app's search
    assert 0 <= report["classify"]["all"]["top1"] <= report["classify"]["all"]["top5"] <= 1
    assert 0 <= report["detect"]["all"]["map_50_95"] <= report["detect"]["all"]["map_50"] <= 1
    assert 0 <= report["detect"]["any_class"]["map_50"] <= 1
    assert 0 <= report["detect"]["detector_only"]["map_50"] <= 1   # both heads name the same classes
    assert report["transcribe"]["all"]["cer"] >= 0


def test_validation_losses_cover_every_task_and_restore_training_mode(data):
    tok = make_tokenizer()
    model = make_model(tok)
    collates = {t: streams.collate_fn(t, TextCodec(tok), model.config) for t in TASK_NAMES}
    batches = evaluate.validation_batches(data, collates, {t: 2 for t in TASK_NAMES}, 2, distributed.Context())
    assert all(len(b) == 2 for b in batches.values())
    losses = evaluate.validation_losses(model, batches, contextlib.nullcontext(), torch.device("cpu"),
                                        distributed.Context())
    assert set(losses) == set(TASK_NAMES) and all(v > 0 for v in losses.values())
    assert model.training  # evaluation hands the model back in training mode
