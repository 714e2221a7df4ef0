"""`fm-multi card`: measure a checkpoint and write its model card (README.md) from the measurements.

    fm-multi card --checkpoint runs/small/final --data data/ --limit 200 --run runs/small

A checkpoint trained in stages (each warm-started from the last with `fm-multi train --init-from`)
takes one --run per stage, earliest first: the card lists each stage and draws one loss curve. The
stages are also kept beside the card (training_history.json: each stage's report figures and its loss
rows, every 5th training row), so a later stage's card needs only the new run folder:

    fm-multi card --checkpoint runs/stage3/final --data data/ --run assets/checkpoint --run runs/stage3

Following "Model Cards for Model Reporting" (Mitchell et al., 2019), the card reports intended use,
limitations, training data, and metrics broken down by the factors that matter here (art style,
background, class, voice, text source, chat skill), not only averages. Everything in it is measured
on DATA's val split when the command runs:

- metrics and slices: evaluate.evaluate, the same call `fm-multi eval --limit N` makes, so the
  tables carry the numbers `fm-multi eval` prints;
- calibration: temperatures (calibrate.py), stored in the checkpoint's config.json for Pipeline;
- robustness: metric against corruption severity (robustness.py);
- with --run, each stage's training report figures and one loss curve from their metrics.jsonl.

Written next to the card: measurements.json (every number), training_history.json and the PNG figures.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fm_multi import calibrate, distributed, evaluate, examples, plots, robustness
from fm_multi.card_text import render
from fm_multi.checkpoint import resolve, write_atomic

DEFAULT_LIMIT = 200          # val examples per task
DATA_PARTS = ("classify", "detect", "speech", "text", "tokenizer")
HISTORY = "training_history.json"
KEEP_STEPS = 50             # training rows kept in HISTORY: the first of every 50 steps, and the last


def _log(message: str, start: float) -> None:
    print(f"[card {time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr, flush=True)


def data_info(data_dir) -> dict:
    """build.json and each part's "Sources and licences" section from its DATASET_CARD.md."""
    data_dir = Path(data_dir)
    build = data_dir / "build.json"
    info = {"build": json.loads(build.read_text(encoding="utf-8")) if build.exists() else {}, "sources": {}}
    for part in DATA_PARTS:
        card = data_dir / part / "DATASET_CARD.md"
        if card.exists():
            text = card.read_text(encoding="utf-8")
            section = text.split("## Sources and licences", 1)[1] if "## Sources and licences" in text else ""
            lines = [line.strip() for line in section.split("\n## ", 1)[0].splitlines()]
            prose = " ".join(line for line in lines if line and not line.startswith("- "))
            items = [line[2:] for line in lines if line.startswith("- ")]   # a list becomes "a; b; c"
            info["sources"][part] = "; ".join(([prose] if prose else []) + items)
    return info


def run_info(run_dir) -> dict:
    """The "- key: value" lines of a run's report.md and its metrics.jsonl rows."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        raise FileNotFoundError(f"{run_dir} is not a training run folder (it has no metrics.jsonl) nor a "
                                f"carded checkpoint (no {HISTORY})")
    facts = {}
    report = run_dir / "report.md"
    if report.exists():
        for line in report.read_text(encoding="utf-8").split("\n## ", 1)[0].splitlines():
            key, sep, value = line[2:].partition(": ")
            if line.startswith("- ") and sep:
                facts[key] = value
    rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {"folder": str(run_dir), "facts": facts, "rows": rows}


def stages_of(folder) -> list[dict]:
    """A run folder -> [its run_info]; a checkpoint carded before -> the stages in its HISTORY."""
    history = Path(folder) / HISTORY
    if history.exists() and not (Path(folder) / "metrics.jsonl").exists():
        return [{k: v for k, v in stage.items() if k != "first_step"}
                for stage in json.loads(history.read_text(encoding="utf-8"))]
    return [run_info(folder)]


def training_history(folders) -> list[dict]:
    """The stages of each folder, earliest first, each with "first_step": the steps of the stages before."""
    stages, first_step = [], 0
    for folder in folders:
        for stage in stages_of(folder):
            stages.append({**stage, "first_step": first_step})
            first_step += max((r["step"] for r in stage["rows"]), default=0)
    return stages


def compact(stage: dict) -> dict:
    """A stage for HISTORY: validation rows and the first training row of every KEEP_STEPS steps (and the
    last), losses only. Compacting again keeps the same rows, so a stage carried from card to card keeps
    its curve."""
    train_steps = [r["step"] for r in stage["rows"] if r.get("kind") == "train"]
    firsts = {}
    for step in train_steps:
        firsts.setdefault(step // KEEP_STEPS, step)
    kept_steps = set(firsts.values()) | set(train_steps[-1:])
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
             if k in ("step", "kind") or k.startswith("loss_")}
            for r in stage["rows"]
            if r.get("kind") == "val" or (r.get("kind") == "train" and r["step"] in kept_steps)]
    return {**stage, "rows": rows}


def card_name(folder: Path) -> str:
    """fm_multi-<preset> from the training metadata in config.json, else the folder's name."""
    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    preset = (meta.get("train") or {}).get("preset")
    return f"fm_multi-{preset}" if preset else folder.resolve().name


def measure(checkpoint, data_dir, limit: int | dict | None, batch_size: int = 16, device=None) -> dict:
    """Every number the card shows: eval (with slices), calibration and robustness, and what the
    checkpoint answers to the playground's examples."""
    from fm_multi.pipeline import Pipeline

    start = time.perf_counter()
    device = device or distributed.pick_device()
    report = evaluate.evaluate(checkpoint, data_dir, limit=limit, batch_size=batch_size, device=device)
    _log("metrics and slices measured", start)
    pipe = Pipeline.from_pretrained(checkpoint, device=device)
    cal = calibrate.measure(pipe.model, pipe.codec, data_dir, limit, batch_size, pipe.labels)
    _log("calibration fitted", start)
    pipe.temperatures = calibrate.temperatures(cal)  # answer the examples as the app will serve them
    answers = examples.answers(pipe)
    _log("the playground's examples answered", start)
    rob = {}
    for task in robustness.METRIC:
        results = report["results"][task]  # detection's curves are of the detector alone (no second look)
        rob[task] = robustness.curves(task, pipe.model, pipe.codec, data_dir, limit, batch_size, pipe.labels,
                                      clean=results.get("detector_only", results["all"]), speech_lm=pipe.speech_lm)
        _log(f"robustness of {task} measured", start)
    counts = pipe.model.parameter_counts()
    return {"eval": report, "calibration": cal, "robustness": rob, "examples": answers,
            "model": {"config": pipe.config.to_dict(), "parameters": counts,
                      "classes": {t: len(pipe.labels[t]) for t in ("classify", "detect")},
                      "speech_lm": pipe.speech_lm and {"order": pipe.speech_lm.order,
                                                       "contexts": len(pipe.speech_lm.counts)}},
            "limit": limit, "data_dir": str(data_dir)}


def write_figures(m: dict, out: Path, stages: list[dict]) -> dict[str, str]:
    """Draw the card's PNGs into `out`; -> {figure key: file name}."""
    figures = {}
    for task, cal in m["calibration"].items():
        if cal["before"] is not None:
            what = "class probabilities" if task == "classify" else "box scores (right = IoU >= 0.5)"
            fig = plots.reliability_figure(cal["before"]["bins"], cal["after"]["bins"],
                                           f"{task}: reliability of {what}",
                                           (cal["before"]["ece"], cal["after"]["ece"]))
            figures[f"reliability_{task}"] = plots.save(fig, out / f"reliability_{task}.png").name
    for task, curves in m["robustness"].items():
        metric = robustness.METRIC[task]
        fig = plots.robustness_figure(curves, metric, f"{task}: {metric} under corrupted input",
                                      higher_is_better=metric != "cer", names=robustness.NAMES)
        figures[f"robustness_{task}"] = plots.save(fig, out / f"robustness_{task}.png").name
    if any(stage["rows"] for stage in stages):
        # every stage drawn from the rows HISTORY keeps, so old and new stages have the same density
        figures["loss_curve"] = plots.save(plots.loss_figure([compact(s) for s in stages]),
                                           out / "loss_curve.png").name
    return figures


def build_card(checkpoint, data_dir, limit: int | dict | None = DEFAULT_LIMIT, out=None, runs=(),
               batch_size: int = 16, device=None, license: str = "apache-2.0", notes: str | None = None) -> Path:
    """Measure, store the temperatures, draw, and write README.md + measurements.json -> card path.

    runs: the training run folders that made the checkpoint, earliest first (one, or one per stage)."""
    folder = resolve(checkpoint)
    out = Path(out) if out else folder
    out.mkdir(parents=True, exist_ok=True)
    stages = training_history([runs] if isinstance(runs, (str, Path)) else runs)  # fail before measuring
    m = measure(folder, data_dir, limit, batch_size, device)
    if Path(checkpoint).expanduser().is_dir():  # a local folder, not a read-only Hub cache
        calibrate.save_temperatures(folder, calibrate.temperatures(m["calibration"]))
    figures = write_figures(m, out, stages)
    info = data_info(data_dir)
    m["data"], m["training"] = info, [{**stage, "rows": len(stage["rows"])} for stage in stages]
    name = card_name(folder)
    card = render(m, figures, info, stages, name=name, license=license, notes=notes)
    write_atomic(out / "measurements.json", json.dumps(m, indent=1, default=str).encode())
    if stages:
        write_atomic(out / HISTORY, json.dumps([compact(stage) for stage in stages]).encode())
    write_atomic(out / "README.md", card.encode())
    return out / "README.md"


def main(args) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else None
    path = build_card(args.checkpoint, args.data, args.limit, args.out, args.run or (), args.batch_size,
                      args.device, args.license, notes)
    print(f"wrote {path}")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("card", help="measure a checkpoint (metrics, slices, calibration, robustness) "
                                    "and write its model card")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: assets/checkpoint)")
    p.add_argument("--data", required=True, help="data folder written by `fm-multi data build`")
    p.add_argument("--limit", type=evaluate.parse_limit, default={"*": DEFAULT_LIMIT},
                   help=f"val examples per task, a fixed spread, for every measurement (default: {DEFAULT_LIMIT}; "
                        "0 = all); per task as 100,classify=0,detect=500")
    p.add_argument("--out", default=None,
                   help="folder for README.md, measurements.json and the figures (default: the checkpoint)")
    p.add_argument("--run", action="append", default=None, metavar="RUN",
                   help="training run folder: adds its report and loss curve; for a checkpoint trained in "
                        "stages (--init-from), one --run per stage, earliest first; a checkpoint carded "
                        f"before stands for the stages in its {HISTORY}")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of the batched tasks")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (default: torch's choice); on cores shared with a training "
                        "run, 1 is often several times faster")
    p.add_argument("--license", default="apache-2.0", help="licence named in the card (default: apache-2.0)")
    p.add_argument("--notes", default=None, metavar="FILE",
                   help="markdown added under the quality targets: training history, what was tried, "
                        "what would close the gaps")
    p.set_defaults(func=main)
