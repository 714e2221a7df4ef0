"""The model card's Markdown, rendered from the measurements of fm_multi/card.py.

The layout follows the Hugging Face model card: YAML front matter (licence, library, tags, data,
`model-index` with the headline metrics) and then the sections of Mitchell et al. (2019). Numbers
are formatted with evaluate._fmt, as `fm-multi eval` prints them, so the two can be compared by eye.
"""
from __future__ import annotations

import json

from fm_multi.evaluate import MAX_GROUP_ROWS, _fmt, limit_text
from fm_multi.robustness import NAMES

MIN_SLICE_N = 5  # smaller slices are too noisy to name as the worst
# the metric a slice is ranked by, and whether higher is better
PRIMARY = {"chat": ("exact_match", True), "summarize": ("rouge_l", True), "classify": ("top1", True),
           "detect": ("map_50", True), "transcribe": ("cer", False)}
TASK_TITLES = {"chat": "Chat", "summarize": "Summarization", "classify": "Image classification",
               "detect": "Object detection", "transcribe": "Speech-to-text"}
HF_TASKS = {"chat": "text-generation", "summarize": "summarization", "classify": "image-classification",
            "detect": "object-detection", "transcribe": "automatic-speech-recognition"}
INDEX_METRICS = {"chat": [("exact_match", "exact_match", "exact match (checkable skills)"),
                          ("perplexity", "perplexity", "perplexity")],
                 "summarize": [("rouge_l", "rouge", "ROUGE-L F1")],
                 "classify": [("top1", "accuracy", "top-1 accuracy"), ("top5", "accuracy", "top-5 accuracy")],
                 "detect": [("map_50", "map", "mAP@0.5"), ("map_50_95", "map", "mAP@[.5:.95]")],
                 "transcribe": [("cer", "cer", "CER"), ("wer", "wer", "WER")]}


# The quality the playground aims for on the offline data's val split: (task, subset, metric,
# higher is better, goal, what it means).
TARGETS = [
    ("classify", "trained_styles", "top1", True, 0.90, "classification top-1, trained art styles"),
    ("classify", "heldout_styles", "top1", True, 0.60, "classification top-1, held-out art style"),
    ("detect", "all", "map_50", True, 0.70, "detection mAP@0.5"),
    ("transcribe", "trained_voices", "cer", False, 0.10, "speech CER, trained voices"),
    ("transcribe", "heldout_voices", "cer", False, 0.25, "speech CER, held-out voices"),
    ("summarize", "all", "rouge_l", True, 0.35, "summarization ROUGE-L (and above the lead sentence)"),
    ("chat", "all", "exact_match", True, 0.80, "chat exact match, checkable skills"),
    ("chat", "all", "looping", False, 0.0, "chat answers that loop, greedy"),
    ("chat", "all", "looping_sampled", False, 0.0, "chat answers that loop, sampled as the app samples"),
]


def target_lines(results: dict, notes: str | None) -> list[str]:
    """Each target against the measured value, met or missed and by how much; then the notes
    (training history, what was tried, what compute would close the gaps) when given."""
    rows = []
    for task, subset, metric, higher, goal, what in TARGETS:
        value = (results.get(task, {}).get(subset) or {}).get(metric)
        if value is None:
            rows.append([what, f"{'>=' if higher else '<='} {goal:g}", "not measured", ""])
            continue
        met = value >= goal if higher else value <= goal
        if task == "summarize":
            met = met and value > results[task][subset].get("rouge_l_lead_sentence", 0)
        rows.append([what, f"{'>=' if higher else '<='} {goal:g}", f"{value:.3f}",
                     "met" if met else f"missed by {abs(goal - value):.3f}"])
    return ["## Quality targets", "", *table(["target", "goal", "measured", ""], rows),
            *([notes.strip(), ""] if notes else [])]


def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows), ""]


def cell(text) -> str:
    """Any text as one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def example_lines(rows: list[dict]) -> list[str]:
    """What the checkpoint answers to the example inputs the playground offers."""
    if not rows:
        return []
    return ["## The playground's examples", "",
            "What this checkpoint answers to each example input of the app (chat and summaries greedy), "
            "beside a right answer where there is one:", "",
            *table(["tab", "input", "right answer", "this checkpoint's answer"],
                   [[r["tab"], cell(r["input"]), cell(r["expected"] or "(open)"), cell(r["output"] or "(empty)")]
                    for r in rows])]


def front_matter(name: str, license: str, results: dict) -> list[str]:
    q = json.dumps  # JSON strings are valid YAML scalars and need no escaping rules of their own
    lines = ["---", f"license: {license}", "library_name: fm-multi", "language:", "- en", "tags:", "- multimodal",
             *(f"- {t}" for t in HF_TASKS.values()),
             "datasets:  # parts built by `fm-multi data build` (synthetic, not on the Hub)",
             *(f"- fm_multi/{p}" for p in ("classify", "detect", "speech", "text")),
             "model-index:", f"- name: {q(name)}", "  results:"]
    for task, res in results.items():
        metrics = [(t, n, res["all"][k]) for k, t, n in INDEX_METRICS[task] if res["all"].get(k) is not None]
        if not metrics:
            continue
        lines += [f"  - task: {{type: {HF_TASKS[task]}, name: {q(TASK_TITLES[task])}}}",
                  f"    dataset: {{type: fm_multi/{task}, name: {q(f'fm_multi {task} (val)')}, split: val}}",
                  "    metrics:",
                  *(f"    - {{type: {t}, value: {round(float(v), 4)}, name: {q(n)}}}" for t, n, v in metrics)]
    return lines + ["---", ""]


def metric_tables(task: str, res: dict) -> list[str]:
    """The subsets of one task as `fm-multi eval` reports them: a main table plus one per `by_` group."""
    main = [(k, v) for k, v in res.items() if not k.startswith("by_") and v]
    keys = list(dict.fromkeys(k for _, v in main for k in v))
    lines = [f"### {TASK_TITLES[task]}", "", *table(["subset", *keys],
                                                      [[s.replace("_", " "), *(_fmt(v.get(k)) for k in keys)]
                                                       for s, v in main])]
    for group, members in ((k, v) for k, v in res.items() if k.startswith("by_") and v):
        gkeys = list(dict.fromkeys(k for v in members.values() if v for k in v))
        body = table([group[3:], *gkeys], [[m, *(_fmt(v.get(k)) if v else "-" for k in gkeys)]
                                           for m, v in members.items()])
        title = f"By {group[3:].replace('_', ' ')} ({len(members)})"
        if len(members) > MAX_GROUP_ROWS:
            lines += [f"<details><summary>{title}</summary>", "", *body, "</details>", ""]
        else:
            lines += [f"**{title}**", "", *body]
    return lines


def worst_slices(results: dict, per_group: int = 3) -> tuple[list[list], list[str]]:
    """Rows (task, grouped by, slice, n, metric, value, overall) of the worst slices of each group with
    at least MIN_SLICE_N examples, and the names of the groups whose members are all smaller."""
    rows, too_small = [], []
    for task, res in results.items():
        metric, higher_better = PRIMARY[task]
        for group, members in ((k, v) for k, v in res.items() if k.startswith("by_")):
            key = "ap_50" if group == "by_class" and task == "detect" else metric
            scored = [(m, v) for m, v in members.items() if v and v.get(key) is not None]
            big = sorted([(m, v) for m, v in scored if v["n"] >= MIN_SLICE_N], key=lambda mv: mv[1][key],
                         reverse=not higher_better)
            if scored and not big:
                too_small.append(f"{task} by {group[3:]}")
            overall = res["all"].get(metric)
            rows += [[task, group[3:], m, v["n"], key, _fmt(v[key]), _fmt(overall)] for m, v in big[:per_group]]
    return rows, too_small


def calibration_lines(cal: dict, figures: dict) -> list[str]:
    rows = [[t, f"{c['temperature']:.3f}", c["n"],
             *((f"{c['before']['ece']:.4f}", f"{c['after']['ece']:.4f}", f"{c['before']['nll']:.4f}",
                f"{c['after']['nll']:.4f}") if c["before"] else ("-",) * 4)] for t, c in cal.items()]
    lines = ["## Calibration", "",
             "Temperature scaling (Guo et al., 2017): one temperature per head, fitted by LBFGS on the "
             "negative log-likelihood of the val logits. Detection is calibrated on its boxes: a box decoded "
             "at score >= 0.05 is a positive when it matches a free ground-truth box of its class at IoU >= 0.5. "
             "ECE uses 15 equal-width bins; the after numbers are cross-fitted (each half of the examples "
             "scaled with the temperature fitted on the other half). The temperatures are stored in "
             "config.json under \"calibration\" and applied by `Pipeline`; the app answers \"I'm not sure\" "
             "when the calibrated top class is below `Limits.min_confidence` (0.3 by default).", "",
             *table(["task", "temperature", "n", "ECE before", "ECE after", "NLL before", "NLL after"], rows)]
    for task in cal:
        if f"reliability_{task}" in figures:
            lines += [f"![{task} reliability diagram]({figures[f'reliability_{task}']})", ""]
    return lines


def robustness_lines(rob: dict, figures: dict, metrics: dict) -> list[str]:
    lines = ["## Robustness", "",
             "The headline metric of each perception task on corrupted val inputs (severity \"none\" is the "
             "clean input). Pictures: Gaussian pixel noise (std as a fraction of the range), Gaussian blur "
             "(radius in pixels), JPEG quality. Speech: white noise at an SNR in dB, speaking rate changed "
             "by resampling (pitch moves with it). Detection is measured without its second look (the detector "
             "alone), which would cost a classifier pass per box for every corrupted picture.", ""]
    for task, curves in rob.items():
        metric = metrics[task]
        rows = [[NAMES.get(c, c), ", ".join(f"{'none' if p['severity'] is None else p['severity']}: "
                                                  f"{p[metric]:.3f}" for p in points), points[0]["n"]]
                for c, points in curves.items()]
        lines += [f"**{TASK_TITLES[task]}** ({metric})", "", *table(["corruption", "severity: value", "n"], rows)]
        if f"robustness_{task}" in figures:
            lines += [f"![{task} robustness]({figures[f'robustness_{task}']})", ""]
    return lines


def measured_limitations(results: dict, rob: dict, metrics: dict) -> list[str]:
    """Bullet points read off the measurements: unseen styles and voices, baselines, corruptions."""
    out, c, t, s = [], results.get("classify", {}), results.get("transcribe", {}), results.get("summarize", {})
    if c.get("trained_styles") and c.get("heldout_styles"):
        out.append(f"- Pictures in an art style never seen in training: top-1 {c['heldout_styles']['top1']:.3f} "
                   f"against {c['trained_styles']['top1']:.3f} on trained styles.")
    if t.get("trained_voices") and t.get("heldout_voices"):
        out.append(f"- Voices held out of training: CER {t['heldout_voices']['cer']:.3f} against "
                   f"{t['trained_voices']['cer']:.3f} on trained voices.")
    if s.get("all", {}).get("rouge_l") is not None:
        names = {"rouge_l_greedy": "greedy with the same bias", "rouge_l_no_copy": "greedy without the copy bias"}
        other = [f"{name}: {s['all'][k]:.3f}" for k, name in names.items() if s["all"].get(k) is not None]
        plain = f" ({'; '.join(other)})" if other else ""
        out.append(f"- Summaries: ROUGE-L {s['all']['rouge_l']:.3f}{plain}; copying the first sentence scores "
                   f"{s['all']['rouge_l_lead_sentence']:.3f}.")
    for task, curves in rob.items():
        m, higher_better = metrics[task], PRIMARY[task][1]
        clean = results.get(task, {}).get("all", {}).get(m)
        # the worst point of all corruptions; on ties the later (harsher) severity
        points = [(name, p) for name, ps in curves.items() for p in ps][::-1]
        name, worst = (min if higher_better else max)(points, key=lambda np_: np_[1][m])
        out.append(f"- {TASK_TITLES[task]}, worst corruption measured: {NAMES.get(name, name)} "
                   f"{worst['severity']} gives {m} {worst[m]:.3f} (clean input: {_fmt(clean)}).")
    return out


INTENDED_USE = """## Intended use

A small teaching and demonstration model: one shared Transformer backbone with text, image and audio
encoders, small enough to train and run on a laptop CPU. Use it to study multi-task training, to try the
Gradio playground, or as a baseline. Inputs it was trained for: short English chat turns (arithmetic,
counting, spelling, unit conversion, word definitions, Debian packages and commands), English package
and man-page descriptions to summarise, single emoji-like pictures of the classes in labels.json, scenes
of such pictures for detection, and short English sentences read by speech synthesisers.

Out of scope: facts about the world, advice of any kind, photographs of real objects, natural
recordings of human speech, languages other than English, and any decision about a person. The model
was trained on synthetic data only; its answers are often wrong and sound sure when they are.
"""


def speech_decoding(lm: dict | None) -> str:
    if not lm:
        return "Speech is decoded greedily (this checkpoint has no speech_lm.json.gz)."
    return (f"Speech is decoded by a CTC prefix beam search with a character {lm['order']}-gram language model "
            f"({lm['contexts']:,} contexts, speech_lm.json.gz) fitted on the training transcripts.")


def architecture_lines(model: dict) -> list[str]:
    cfg = model["config"]
    keys = ("d_model", "n_layer", "n_head", "max_seq_len", "vocab_size", "image_size", "detect_image_size",
            "patch_size", "vision_stem", "n_mels", "audio_stride")
    stem = ("a convolutional stem (stride-2 3x3 convolutions) to one token per patch"
            if cfg.get("vision_stem") == "conv" else "a ViT linear patch encoder")
    return ["## Architecture", "",
            f"Pre-norm Transformer backbone shared by every task; a BPE text encoder with a tied LM head, {stem}, "
            "and a strided-convolution log-mel encoder (one token per 40 ms); heads: class logits "
            "from the CLS token, dense per-patch detection (class + box), CTC over characters. Each detected box "
            "gets a second look: its crop goes through the classification head, and the box keeps the class both "
            "heads rate highest (the detection table's \"detector only\" row is without it). Both image heads "
            "average each picture's answer with its mirror image's; classification also with the middle 80% of "
            "the picture and its mirror. " + speech_decoding(model.get("speech_lm")), "",
            *table(["setting", "value"], [[k, cfg[k]] for k in keys if k in cfg]),
            *table(["part", "parameters"], [[k, f"{v:,}"] for k, v in model["parameters"].items()])]


def data_lines(info: dict) -> list[str]:
    parts = info["build"].get("parts", {})
    counts = {"summarize": ("train", "val"), "chat": ("train", "val"), "classify": ("train", "val", "classes"),
              "detect": ("train", "val", "val_objects"), "speech": ("train", "val", "train_hours", "val_hours")}
    rows = [[p, ", ".join(f"{k} {parts[p][k]}" for k in ks if k in parts[p])] for p, ks in counts.items()
            if p in parts]
    lines = ["## Training data", "",
             "Built offline by `fm-multi data build` from the sources below"
             + (" (the `--small` build)" if info["build"].get("small") else "") + "; every part has its own "
             "DATASET_CARD.md.", "", *table(["part", "examples"], rows), "### Sources and licences", ""]
    lines += [f"- **{part}**: {text}" for part, text in info["sources"].items() if text]
    return lines + [""]


def run_lines(stages: list[dict], figures: dict) -> list[str]:
    """The training section: each stage's report facts (one stage: no sub-headings), then the curve."""
    lines = ["## Training run", ""]
    if len(stages) > 1:
        lines += [f"{len(stages)} stages, each started from the weights of the one before (`fm-multi train "
                  "--init-from`); the loss curve joins them, with the steps counted from the first stage.", ""]
    for k, stage in enumerate(stages, 1):
        if len(stages) > 1:
            lines += [f"### Stage {k} (steps {stage['first_step']:,} onwards)", ""]
        lines += [f"From `{stage['folder']}` (report.md and metrics.jsonl).", ""]
        lines += [f"- {key}: {value}" for key, value in stage["facts"].items()]
        lines += [""]
    if "loss_curve" in figures:
        lines += [f"![loss curve]({figures['loss_curve']})", ""]
    return lines


def describe_limit(limit) -> str:
    """ "100 examples per task; classify: all" for the card's opening line."""
    def count(n):
        return f"{n} examples" if n else "every example"
    if not isinstance(limit, dict):
        return count(limit) + " per task"
    rest = [f"{task}: {count(n)}" for task, n in limit.items() if task != "*"]
    return "; ".join([count(limit.get("*", 0)) + " per task"] + rest)


def render(m: dict, figures: dict, info: dict, stages: list[dict], name: str, license: str,
           notes: str | None = None) -> str:
    results = m["eval"]["results"]
    metrics = {t: PRIMARY[t][0] if t != "detect" else "map_50" for t in m["robustness"]}
    limit = limit_text(m["limit"])
    lines = [*front_matter(name, license, results), f"# {name}", "",
             "fm_multi: one Transformer backbone serving chat, summarization, image classification, object "
             "detection and speech-to-text. Every number below was measured by `fm-multi card` on the val "
             f"split of `{m['data_dir']}` ({describe_limit(m['limit'])}).", "",
             "```python", "from fm_multi import Pipeline", 'p = Pipeline.from_pretrained("path/or/owner-name")',
             'p.classify("dog.png"); p.transcribe("hello.wav"); p.summarize(text)', "```", "",
             INTENDED_USE, "## Limitations", "",
             "Measured on this checkpoint (details in the sections below):", "",
             *measured_limitations(results, m["robustness"], metrics), "",
             *target_lines(results, notes), *example_lines(m.get("examples", [])),
             *architecture_lines(m["model"]), *data_lines(info),
             "## Evaluation", "",
             f"`fm-multi eval --limit {limit}` on the same data prints these numbers; slices with "
             "many members are folded.", ""]
    for task, res in results.items():
        lines += metric_tables(task, res)
    rows, too_small = worst_slices(results)
    lines += ["## Worst slices", "",
              f"The three worst members of every breakdown by the task's headline metric, among slices with at "
              f"least {MIN_SLICE_N} examples; `overall` is the task's average.", "",
              *table(["task", "by", "slice", "n", "metric", "value", "overall"], rows)]
    if too_small:
        lines += [f"No slice reaches {MIN_SLICE_N} examples at this --limit for: {', '.join(too_small)} "
                  "(their tables above list every member).", ""]
    lines += calibration_lines(m["calibration"], figures) + robustness_lines(m["robustness"], figures, metrics)
    if stages:
        lines += run_lines(stages, figures)
    common = f"--checkpoint CHECKPOINT --data {m['data_dir']} --limit {limit}"
    lines += ["## Reproduce", "", "```bash", f"fm-multi eval {common} --json eval.json",
              f"fm-multi card {common}" + "".join(f" --run {stage['folder']}" for stage in stages), "```", ""]
    return "\n".join(lines)
