"""What a training run leaves on disk: resumable state files, the metrics log, the report.

- StateFiles: checkpoints/state_<step>.pt written atomically (write, fsync, rename), the last
  `keep_last` kept, read back with `torch.load(weights_only=True)` so a state file can hold only
  tensors and plain values, never code.
- RunLog: the progress bar (rank 0), metrics.jsonl (one JSON object per line) and TensorBoard events
  in tb/. A resumed run drops the rows logged after its state was saved, so each step appears once.
- write_report: report.md with the config, git commit, hardware, wall time, throughput and losses.
"""
from __future__ import annotations

import io
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

from fm_multi.checkpoint import write_atomic
from fm_multi.config import TASK_NAMES

STATE = re.compile(r"^state_(\d+)\.pt$")


class StateFiles:
    def __init__(self, folder: Path, keep_last: int):
        self.folder, self.keep_last = Path(folder), keep_last

    def _steps(self) -> list[tuple[int, Path]]:
        """(step, path) of the complete state files, oldest first (a write in progress is a hidden .tmp file)."""
        if not self.folder.is_dir():
            return []
        return sorted((int(m.group(1)), p) for p in self.folder.iterdir() if (m := STATE.match(p.name)))

    def paths(self) -> list[Path]:
        return [p for _, p in self._steps()]

    def after(self, step: int) -> list[Path]:
        """The state files of later steps than `step`, oldest first."""
        return [p for s, p in self._steps() if s > step]

    def latest(self) -> Path | None:
        paths = self.paths()
        return paths[-1] if paths else None

    def save(self, step: int, state: dict, stable: bool = False) -> Path:
        """state_<step>.pt, or with `stable` stable_<step>.pt, which is never pruned nor resumed from
        unless named."""
        self.folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = self.folder / f"{'stable' if stable else 'state'}_{step:07d}.pt"
        write_atomic(path, buffer.getvalue())
        for old in self.paths()[:-self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    @staticmethod
    def load(path: Path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=True)


class RunLog:
    """Progress bar, metrics.jsonl and TensorBoard; everything is a no-op off rank 0."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool = True, source: Path | None = None):
        """`source`: the folder of the run being resumed, when it is another one (a continuation into a
        new folder); the log then starts with that run's rows up to `start_step`, so the new folder
        holds the whole run's record, as a run resumed in its own folder does."""
        self.run_dir, self.enabled, self.bar = Path(run_dir), enabled, None
        self.history: list[dict] = []
        self.config: dict = {}
        self._reset_window()
        self.totals = {"samples": 0, "tokens": 0, "seconds": 0.0, "steps": 0}
        if not enabled:
            return
        self.commit = git_commit()  # the code this session runs: read now, the tree may change before the end
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self.history = self._kept_rows(start_step, source)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.history), encoding="utf-8")
        self.tb = self._tensorboard(start_step)

    def _tensorboard(self, start_step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package
            print("warning: tensorboard is not installed (pip install tensorboard); "
                  "writing metrics.jsonl only", file=sys.stderr)
            return None
        # purge_step hides the events a killed session wrote after its last state was saved
        return SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step + 1 if start_step else None)

    def _kept_rows(self, start_step: int, source: Path | None) -> list[dict]:
        path = self.path if self.path.exists() or source is None else Path(source) / "metrics.jsonl"
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r for r in rows if r["step"] <= start_step]

    def _reset_window(self) -> None:
        self.window = {"losses": torch.zeros(len(TASK_NAMES)), "counts": torch.zeros(len(TASK_NAMES)),
                       "samples": 0, "tokens": 0, "steps": 0, "seconds": 0.0}

    def write_config(self, spec, model_config, train_config, world_size: int, init_from: str | None) -> None:
        self.config = {"preset": spec.preset, "data": str(spec.data), "world_size": world_size,
                       "init_from": init_from,
                       "model": model_config.to_dict(), "train": train_config.to_dict()}
        if self.enabled:
            write_atomic(self.run_dir / "config.json", json.dumps(self.config, indent=2).encode())

    def start_bar(self, step: int, max_steps: int) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=max_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)

    def _emit(self, row: dict) -> None:
        self.history.append(row)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        for key, value in row.items():
            if self.tb and key not in ("step", "kind"):
                self.tb.add_scalar(f"{row['kind']}/{key}", value, row["step"])

    def train(self, step: int, out: dict, every: int) -> None:
        """Record one optimizer step; every `every` steps write the window's means and rates.

        Rates use the steps' own durations (data loading included; evaluation and checkpoints not).
        """
        w = self.window
        w["losses"] += out["losses"] * out["counts"]
        w["counts"] += out["counts"]
        for key in ("samples", "tokens", "seconds"):
            w[key] += out[key]
            self.totals[key] += out[key]
        w["steps"] += 1
        self.totals["steps"] += 1
        if not self.enabled:
            return
        self.bar.update(1)
        if step % every:
            return
        seconds = w["seconds"]
        row = {"step": step, "kind": "train", "lr": out["lr"], "grad_norm": out["grad_norm"],
               "samples_per_s": w["samples"] / seconds, "tokens_per_s": w["tokens"] / seconds,
               "steps_per_s": w["steps"] / seconds}
        row.update({f"loss_{t}": float(w["losses"][i] / w["counts"][i])
                    for i, t in enumerate(TASK_NAMES) if w["counts"][i]})
        self._emit(row)
        mean = float(w["losses"].sum() / w["counts"].sum())
        self.bar.set_postfix(loss=f"{mean:.3f}", samples_s=f"{row['samples_per_s']:.1f}",
                             tok_s=f"{row['tokens_per_s']:.0f}", refresh=False)
        self._reset_window()

    def val(self, step: int, losses: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, "kind": "val", **{f"loss_{k}": v for k, v in losses.items()}}
        self._emit(row)
        text = "  ".join(f"{k} {v:.3f}" for k, v in losses.items())
        (self.bar.write if self.bar else print)(f"step {step} val: {text}")

    def rows(self, kind: str) -> list[dict]:
        return [r for r in self.history if r["kind"] == kind]

    def close(self) -> None:
        if self.enabled:
            if self.bar:
                self.bar.close()
                self.bar = None
            if self.tb:
                self.tb.close()


def model_card(model, labels: dict, cfg, step: int, why: str) -> str:
    """A short generated card; the measured card comes from `fm-multi card`."""
    counts = model.parameter_counts()
    return ("---\nlibrary_name: fm-multi\nlicense: apache-2.0\ntags: [multimodal]\n---\n"
            f"# fm_multi checkpoint (step {step})\n\nSaved at the {why}. Not yet measured: run "
            "`fm-multi eval` for metrics.\n\n"
            f"- parameters: {counts['total']:,}\n- classes: {len(labels['classify'])} (classify), "
            f"{len(labels['detect'])} (detect)\n- trained {step} steps of {cfg.max_steps}, lr {cfg.lr}, "
            f"task weights {cfg.task_weights}\n")


def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + (" (with uncommitted changes)" if dirty else "")) if sha else "unknown"


def hardware(ctx) -> str:
    if ctx.device.type == "cuda":
        device = torch.cuda.get_device_name(ctx.device)
    else:
        device = f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"
    return f"{ctx.world_size} x {device}; torch {torch.__version__}, Python {platform.python_version()}"


def _loss_table(first: dict, last: dict) -> list[str]:
    lines = ["| task | val loss at start | val loss at end |", "| --- | --- | --- |"]
    for key in [k for k in last if k.startswith("loss_")]:
        start = f"{first[key]:.4f}" if key in first else "-"
        lines.append(f"| {key[5:]} | {start} | {last[key]:.4f} |")
    return lines


def write_report(run_dir: Path, log: RunLog, model, steps: int, wall_s: float, ctx, sync: float,
                 precision: str = "fp32") -> Path:
    vals, t = log.rows("val"), log.totals
    first, last = (vals[0], vals[-1]) if vals else ({}, {})
    best = min(vals, key=lambda r: r["loss_total"]) if vals else {"loss_total": float("nan"), "step": "-"}
    rate = (f"{t['steps'] / t['seconds']:.3f} steps/s, {t['samples'] / t['seconds']:.1f} samples/s, "
            f"{t['tokens'] / t['seconds']:.0f} tokens/s (steps of this session; evaluation excluded)"
            if t["seconds"] else "n/a")
    lines = [
        "# Training report", "",
        f"- steps: {steps}", f"- wall time: {wall_s / 60:.1f} min (all sessions of the run)",
        f"- throughput: {rate}", f"- git commit: {log.commit} (this session's code)",
        f"- hardware: {hardware(ctx)}",
        f"- precision: {'bf16 autocast, fp32 weights' if precision == 'bf16' else 'fp32'}",
        f"- parameters: {model.parameter_counts()['total']:,}",
        *([f"- started from the weights of: {log.config['init_from']}"] if log.config.get("init_from") else []),
        f"- largest weight difference between ranks at the end: {sync:g}",
        f"- best validation loss (weighted total): {best['loss_total']:.4f} at step {best['step']} "
        "(saved in best/)", "",
        "## Validation loss", "", *_loss_table(first, last), "",
        "Evaluate the final checkpoint with `fm-multi eval --checkpoint " f"{run_dir / 'final'} --data DIR`.", "",
        "## Config", "", "```json", json.dumps(log.config, indent=2), "```", ""]
    path = Path(run_dir) / "report.md"
    write_atomic(path, "\n".join(lines).encode())
    return path
