"""Evaluation: validation losses during training, and the full per-task report of `fm-multi eval`.

    fm-multi eval --checkpoint runs/small/final --data data/ --json eval.json --limit 200

| task       | measured on val                                | split by                          |
| ---------- | ---------------------------------------------- | --------------------------------- |
| chat       | perplexity of assistant turns; exact match of   | skill; arithmetic by the number   |
|            | the greedy final answer on checkable skills,    | of digits in the right answer     |
|            | follow-ups alone; repeated 3-grams, loop rate   |                                   |
|            | (greedy, and sampled as the app samples)        |                                   |
| summarize  | perplexity of summaries; ROUGE-L F1 beside the  | text source                       |
|            | lead-sentence and lead-N-words baselines        |                                   |
| classify   | top-1 / top-5 accuracy                          | art style; trained vs unseen;     |
|            |                                                 | class; background                 |
| detect     | COCO mAP@0.5 and mAP@[.5:.95] (pycocotools)     | class (AP@0.5); object style;     |
|            |                                                 | image background                  |
| transcribe | CER and WER (corpus level)                      | voice; trained vs held-out        |
|            |                                                 | voices; text source               |

Batched tasks go through the model directly; generation goes through Pipeline so it decodes as the
app does. `--limit N` evaluates a fixed spread of N examples per task (see streams.val_subset); the default
500 keeps a CPU evaluation of the small model to minutes (summaries are generated one at a time).
`--limit 100,classify=0,detect=500` sets it per task (0 = all): cheap tasks can use every example.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from fm_multi import distributed, metrics, streams
from fm_multi.config import TASK_NAMES
from fm_multi.tasks import classify as classify_task
from fm_multi.tasks import detect as detect_task
from fm_multi.tasks import transcribe as transcribe_task
from fm_multi.tasks.language import IGNORE

DETECT_THRESHOLD = 0.05   # mAP needs the low-scoring boxes too: they extend the precision-recall curve


# --- during training ------------------------------------------------------------------------
def validation_batches(data_dir, collates: dict, batch_sizes: dict, n_batches: int, ctx) -> dict:
    """Per task, this rank's share of n_batches fixed validation batches, collated once."""
    out = {}
    for task in TASK_NAMES:
        data = streams.dataset(task, data_dir, "val")
        bs = batch_sizes[task]
        idx = streams.val_subset(len(data), n_batches * bs)
        chunks = [idx[i:i + bs] for i in range(0, len(idx), bs)]
        out[task] = [collates[task]([data[i] for i in chunk]) for chunk in chunks[ctx.rank::ctx.world_size]]
    return out


@torch.no_grad()
def validation_losses(model, val_batches: dict, autocast, device, ctx) -> dict:
    """{task: mean loss over the validation batches of every rank} (each batch weighted by its size)."""
    model.eval()
    sums = torch.zeros(len(TASK_NAMES), 2)
    for i, task in enumerate(TASK_NAMES):
        for batch in val_batches[task]:
            with autocast:
                loss, _ = streams.TASK_MODULES[task].loss(model, streams.to_device(batch, device))
            n = streams.batch_size_of(batch)
            sums[i] += torch.tensor([float(loss) * n, n])
    model.train()
    sums = distributed.all_reduce_sum(sums, ctx)
    return {t: float(sums[i, 0] / sums[i, 1]) for i, t in enumerate(TASK_NAMES) if sums[i, 1] > 0}


# --- full evaluation ------------------------------------------------------------------------
def _batches(data, indices: list[int], batch_size: int):
    for i in range(0, len(indices), batch_size):
        chunk = indices[i:i + batch_size]
        yield chunk, [data[j] for j in chunk]


def _indices(data, limit: int | dict | None, task: str) -> list[int]:
    """The val examples `task` is measured on under `limit` (see limit_for): a fixed spread, or all."""
    n = limit_for(limit, task)
    return streams.val_subset(len(data), n) if n else list(range(len(data)))


def parse_limit(text: str) -> dict[str, int]:
    """A `--limit` value -> {task: examples, "*": every other task}; 0 means all.

    "500" caps every task at 500; "100,classify=0,detect=500" caps at 100 but measures every
    classification picture and 500 detection scenes.
    """
    import argparse

    out = {}
    for part in str(text).replace(" ", "").split(","):
        task, _, n = part.rpartition("=")
        task = task or "*"
        if task != "*" and task not in TASK_NAMES:
            raise argparse.ArgumentTypeError(f"--limit: unknown task {task!r} (tasks: {', '.join(TASK_NAMES)})")
        if not n.isdigit():
            raise argparse.ArgumentTypeError(f"--limit: {part!r} is not N or TASK=N with N >= 0 (0 = all)")
        out[task] = int(n)
    return out


def limit_for(limit: int | dict | None, task: str) -> int | None:
    """The example cap of `task` under a limit (an int for every task, or parse_limit's dict); None = all."""
    if isinstance(limit, dict):
        limit = limit.get(task, limit.get("*", 0))
    return limit or None


def limit_text(limit: int | dict | None) -> str:
    """A limit as `--limit` takes it: "100", "0" (all) or "100,classify=0"."""
    if not isinstance(limit, dict):
        return str(limit or 0)
    rest = [f"{task}={n}" for task, n in limit.items() if task != "*"]
    return ",".join([str(limit.get("*", 0))] + rest)


@torch.no_grad()
def perplexity(model, data, indices, collate, batch_size: int) -> float:
    """exp(mean cross-entropy per target token) over the learnt part of each example."""
    nll, tokens = 0.0, 0
    device = next(model.parameters()).device
    for _, examples in _batches(data, indices, batch_size):
        batch = streams.to_device(collate(examples), device)
        logits = model.forward_text(batch["idx"]).float()
        nll += float(F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(),
                                     ignore_index=IGNORE, reduction="sum"))
        tokens += int((batch["targets"] != IGNORE).sum())
    return float(torch.exp(torch.tensor(nll / max(tokens, 1))))


def _group(data, indices, key: str) -> dict[str, list[int]]:
    """indices grouped by a row field (e.g. "skill", "source"), sorted by group name."""
    groups = defaultdict(list)
    for i in indices:
        groups[str(data[i].get(key, "unknown"))].append(i)
    return dict(sorted(groups.items()))


LOOP_SHARE = 0.3  # an answer with more repeated word 3-grams than this counts as looping


def eval_chat(pipe, data, indices, collate, batch_size: int) -> dict:
    """Perplexity on every val conversation. Each final turn is answered greedily (as the app's
    temperature 0): exact match on the checkable skills, also for follow-ups alone (questions that
    need the earlier turns, "And if you add 3 to that?"); on every answer, the share of repeated
    word 3-grams and the share of answers that loop (over LOOP_SHARE); `looping_sampled` counts loops
    again on a second answer, sampled as the app's chat tab samples by default (engine.SamplingParams'
    defaults: temperature 0.7, top-k 50, top-p 0.95, repetition penalty 1.1), seeded by conversation. All
    per skill, and arithmetic by the length of its right answer (each answer digit needs the carries of
    the digits after it)."""
    hit, follow_up, repeat, repeat_sampled, by_length = {}, set(), {}, {}, defaultdict(list)
    for i in indices:
        *context, reference = data[i]["messages"]
        answer = pipe.chat(context, temperature=0.0, repetition_penalty=1.0, max_new_tokens=48)
        repeat[i] = metrics.repeated_ngram_share(answer)
        sampled = pipe.chat(context, seed=i, max_new_tokens=48)
        repeat_sampled[i] = metrics.repeated_ngram_share(sampled)
        if data[i].get("checkable"):
            hit[i] = metrics.normalize_answer(answer) == metrics.normalize_answer(reference["content"])
            if sum(m["role"] == "user" for m in context) > 1:
                follow_up.add(i)
            right = reference["content"].strip().removeprefix("-")
            if data[i].get("skill") == "arithmetic" and right.isdigit():
                by_length[len(right)].append(i)

    def mean(values: list) -> float | None:
        return sum(values) / len(values) if values else None

    def summary(idx) -> dict:
        h = [hit[i] for i in idx if i in hit]
        f = [hit[i] for i in idx if i in follow_up]
        return {"n": len(idx), "perplexity": perplexity(pipe.model, data, idx, collate, batch_size),
                "n_checkable": len(h), "exact_match": mean(h),
                "n_follow_up": len(f), "follow_up_exact_match": mean(f),
                "repeated_3gram_share": mean([repeat[i] for i in idx]),
                "looping": mean([repeat[i] > LOOP_SHARE for i in idx]),
                "looping_sampled": mean([repeat_sampled[i] > LOOP_SHARE for i in idx])}

    return {"all": summary(indices),
            "by_skill": {s: summary(idx) for s, idx in _group(data, indices, "skill").items()},
            "by_arithmetic_answer_digits": {str(n): summary(by_length[n]) for n in sorted(by_length)}}


def eval_summarize(pipe, data, indices, collate, batch_size: int) -> dict:
    """ROUGE-L F1 of summaries against the lead baselines (N = mean reference length), overall and per
    text source; the summaries as the app writes them (beam search with a copy bias, see
    pipeline.SUMMARY_NUM_BEAMS), greedy with the bias (rouge_l_greedy) and greedy without it
    (rouge_l_no_copy)."""
    rows = {i: data[i] for i in indices}
    n_words = max(1, round(sum(len(r["summary"].split()) for r in rows.values()) / max(len(rows), 1)))
    scores = {}
    for i, r in rows.items():
        scores[i] = {"rouge_l": metrics.rouge_l(pipe.summarize(r["document"]), r["summary"]),
                     "rouge_l_greedy": metrics.rouge_l(pipe.summarize(r["document"], num_beams=1), r["summary"]),
                     "rouge_l_no_copy": metrics.rouge_l(pipe.summarize(r["document"], num_beams=1, copy_bias=0.0),
                                                        r["summary"]),
                     "rouge_l_lead_sentence": metrics.rouge_l(metrics.lead_sentence(r["document"]), r["summary"]),
                     "rouge_l_lead_words": metrics.rouge_l(metrics.lead_words(r["document"], n_words), r["summary"])}

    def summary(idx) -> dict:
        means = {k: sum(scores[i][k] for i in idx) / len(idx) for k in scores[idx[0]]} if idx else {}
        return {"n": len(idx), "perplexity": perplexity(pipe.model, data, idx, collate, batch_size), **means}

    return {"all": {**summary(indices), "lead_words": n_words},
            "by_source": {s: summary(idx) for s, idx in _group(data, indices, "source").items()}}


@torch.no_grad()
def eval_classify(model, data, indices, collate, batch_size: int, trained_styles: set) -> dict:
    """Top-1/top-5 overall, per style, class and background, and for trained styles vs styles never
    seen in training."""
    device = next(model.parameters()).device
    hits = {}  # index -> (top-1 hit, top-5 hit)
    for chunk, examples in _batches(data, indices, batch_size):
        batch = streams.to_device(collate(examples), device)
        logits = classify_task.predict(model, batch["pixels"], batch["centre"])
        top1 = metrics.top_k_correct(logits, batch["labels"], 1).tolist()
        top5 = metrics.top_k_correct(logits, batch["labels"], 5).tolist()
        hits.update({j: (a, b) for j, a, b in zip(chunk, top1, top5)})

    def summary(idx) -> dict | None:
        if not idx:
            return None
        return {"n": len(idx), "top1": sum(hits[j][0] for j in idx) / len(idx),
                "top5": sum(hits[j][1] for j in idx) / len(idx)}

    def by(key) -> dict:
        groups = defaultdict(list)
        for j in hits:
            groups[key(j)].append(j)
        return {g: summary(idx) for g, idx in sorted(groups.items())}

    backgrounds = _classify_backgrounds(data)
    return {"all": summary(list(hits)),
            "trained_styles": summary([j for j in hits if data.styles[j] in trained_styles]),
            "heldout_styles": summary([j for j in hits if data.styles[j] not in trained_styles]),
            "by_style": by(lambda j: data.styles[j]),
            "by_class": by(lambda j: data.classes[data.targets[j]]),
            "by_background": by(lambda j: backgrounds.get(data.samples[j][0], "unknown"))}


def _classify_backgrounds(data) -> dict[str, str]:
    """image path -> background kind, from meta_<split>.jsonl when it has one."""
    split = Path(data.samples[0][0]).relative_to(data.root).parts[0] if data.samples else "val"
    meta = data.root / f"meta_{split}.jsonl"
    if not meta.exists():
        return {}
    rows = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {str(data.root / r["file"]): r.get("background", "unknown") for r in rows}


@torch.no_grad()
def eval_detect(model, data, indices, collate, batch_size: int, annotation_file: Path, labels: list[str],
                slices: bool = True, classify_labels: list[str] | None = None) -> dict:
    """COCO mAP of the decoded boxes (in original image pixels) on the chosen val images, with the
    second look at each box's crop that the app takes (tasks/detect.py: decode_with_crops) when the
    classification head names the same classes (`classify_labels`); with `slices`, also of the detector
    alone (detector_only), with the labels ignored (any_class: are the boxes in the right places?) and
    per class, object style and image background (more COCOeval runs)."""
    device = next(model.parameters()).device
    results, detector_results, image_ids = [], [], []
    coco = metrics.load_coco(annotation_file)
    category_id = {c["name"]: c["id"] for c in coco["categories"]}
    second_look = detect_task.crop_classifier(model, {"classify": classify_labels, "detect": labels})

    def coco_rows(image_id, dets):
        return [{"image_id": image_id, "category_id": category_id[d["label"]], "score": d["score"],
                 "bbox": [d["box"][0], d["box"][1], d["box"][2] - d["box"][0], d["box"][3] - d["box"][1]]}
                for d in dets]

    for chunk, examples in _batches(data, indices, batch_size):
        batch = streams.to_device(collate(examples), device)
        out = detect_task.predict(model, batch["pixels"])
        for k, j in enumerate(chunk):
            rec = data.images[j]
            image_ids.append(rec["id"])
            results += coco_rows(rec["id"], detect_task.decode_with_crops(
                out, k, examples[k][0], labels, second_look, model.config.image_size, DETECT_THRESHOLD))
            if slices and second_look:
                detector_results += coco_rows(rec["id"], detect_task.decode(out, k, *rec["size"], labels,
                                                                            threshold=DETECT_THRESHOLD))
    sliced = metrics.coco_slices(coco, results, image_ids) if slices else {}
    overall = sliced.pop("all", None) or metrics.coco_map(coco, results, image_ids)
    report = {"all": {"n": len(image_ids), **overall, "detections": len(results)}}
    if slices:
        any_class = metrics.coco_map_any_class(coco, results, image_ids)
        report["any_class"] = {"n": len(image_ids), **any_class}
        if second_look:
            report["detector_only"] = {"n": len(image_ids), **metrics.coco_map(coco, detector_results, image_ids)}
        report.update(sliced)
    return report


def _rates(pairs: list[tuple[str, str]]) -> dict:
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    return {"n": len(pairs), "cer": metrics.error_rate(refs, hyps, "char"),
            "wer": metrics.error_rate(refs, hyps, "word")}


@torch.no_grad()
def eval_transcribe(model, data, indices, collate, batch_size: int, lm=None) -> dict:
    """CER/WER overall, per voice, and for trained voices vs voices held out of training; decoded as
    Pipeline.transcribe does (beam search with the language model `lm` when given, else greedy)."""
    device = next(model.parameters()).device
    by_voice, by_source, heldout = defaultdict(list), defaultdict(list), {}
    for chunk, examples in _batches(data, indices, batch_size):
        batch = streams.to_device(collate(examples), device)
        logits, lengths = model.forward_transcribe(batch["mel"], batch["mel_lengths"])
        for k, ex in enumerate(examples):
            hyp, _ = transcribe_task.decode(logits[k], int(lengths[k]), lm)
            ref = transcribe_task.normalize_for_ctc(ex["text"])
            by_voice[ex["speaker"]].append((ref, hyp))
            by_source[ex.get("source", "unknown")].append((ref, hyp))
            heldout[ex["speaker"]] = bool(ex.get("heldout_voice", False))
    groups = {"trained_voices": [p for v, ps in by_voice.items() if not heldout[v] for p in ps],
              "heldout_voices": [p for v, ps in by_voice.items() if heldout[v] for p in ps]}
    return {"all": _rates([p for ps in by_voice.values() for p in ps]),
            **{g: _rates(ps) if ps else None for g, ps in groups.items()},
            "by_voice": {v: {**_rates(ps), "heldout": heldout[v]} for v, ps in sorted(by_voice.items())},
            "by_source": {s: _rates(ps) for s, ps in sorted(by_source.items())}}


def evaluate(checkpoint, data_dir, tasks=TASK_NAMES, limit: int | None = None, batch_size: int = 16,
             device=None) -> dict:
    """Load a checkpoint and measure every task in `tasks` on data_dir's val split."""
    from fm_multi.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(checkpoint, device=device or distributed.pick_device())
    pipe.model.eval()
    collates = {t: streams.collate_fn(t, pipe.codec, pipe.config, inference=True) for t in TASK_NAMES}
    results = {}
    for task in tasks:
        data = streams.dataset(task, data_dir, "val")
        idx, collate = _indices(data, limit, task), collates[task]
        if task == "chat":
            results[task] = eval_chat(pipe, data, idx, collate, batch_size)
        elif task == "summarize":
            results[task] = eval_summarize(pipe, data, idx, collate, batch_size)
        elif task == "classify":
            trained = set(streams.dataset("classify", data_dir, "train").styles)
            results[task] = eval_classify(pipe.model, data, idx, collate, batch_size, trained)
        elif task == "detect":
            results[task] = eval_detect(pipe.model, data, idx, collate, batch_size,
                                        data.root / "val" / "annotations.json", pipe.labels["detect"],
                                        classify_labels=pipe.labels["classify"])
        else:
            results[task] = eval_transcribe(pipe.model, data, idx, collate, batch_size, pipe.speech_lm)
    return {"checkpoint": str(checkpoint), "data": str(data_dir), "limit": limit, "results": results}


# --- presentation ---------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


MAX_GROUP_ROWS = 12  # a `by_x` group with more members (147 classes) is one row; the JSON has them all


def table_rows(results: dict) -> list[tuple[str, str, str]]:
    """(task, subset, "metric value  metric value ...") rows; `by_x` groups give a row per member."""
    rows = []
    for task, res in results.items():
        for subset, values in res.items():
            if subset.startswith("by_") and len(values) > MAX_GROUP_ROWS:
                rows.append((task, f"{subset[3:]} (x{len(values)})", "see --json"))
                continue
            members = values.items() if subset.startswith("by_") else [(subset, values)]
            for name, m in members:
                label = f"{subset[3:]} {name}" if subset.startswith("by_") else name.replace("_", " ")
                text = "  ".join(f"{k} {_fmt(v)}" for k, v in m.items()) if m else "(none)"
                rows.append((task, label, text))
    return rows


def format_table(results: dict) -> str:
    rows = [("task", "subset", "metrics")] + table_rows(results)
    w0, w1 = (max(len(r[i]) for r in rows) for i in range(2))
    lines = [f"{t:<{w0}}  {s:<{w1}}  {m}" for t, s, m in rows]
    return "\n".join(lines[:1] + ["-" * (w0 + w1 + 40)] + lines[1:])


def main(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    report = evaluate(args.checkpoint, args.data, args.tasks, args.limit, args.batch_size, args.device)
    print(format_table(report["results"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("eval", help="measure a checkpoint on a data folder's val split, task by task")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder or Hub repo id (default: assets/checkpoint)")
    p.add_argument("--data", required=True, help="data folder written by `fm-multi data build`")
    p.add_argument("--tasks", nargs="+", choices=TASK_NAMES, default=list(TASK_NAMES),
                   help="tasks to evaluate (default: all five)")
    p.add_argument("--limit", type=parse_limit, default={"*": 500},
                   help="at most N val examples per task, a fixed spread (default: 500; 0 = all); per task as "
                        "100,classify=0,detect=500")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of the batched tasks")
    p.add_argument("--json", default=None, help="also write the full results to this JSON file")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads (default: PyTorch's choice; 1 is faster on a busy machine)")
    p.set_defaults(func=main)
