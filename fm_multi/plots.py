"""Figures for explanations and the model card, drawn with matplotlib's object API.

Each function builds a `matplotlib.figure.Figure` directly (Agg canvas, no pyplot): no global figure
state, so gradio's worker threads can draw at the same time. Functions return a PIL image or write
a PNG; nothing here computes a measurement.

- alignment_image: log-mel spectrogram with the CTC alignment (which 40 ms token emitted which
  character, coloured by its probability).
- reliability_figure: the reliability diagram of Guo et al. (2017), before and after scaling.
- robustness_figure: one metric against corruption severity, a panel per corruption.
- loss_figure: training and validation losses per task, across a checkpoint's training stages.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

DPI = 100


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def to_image(fig) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def save(fig, path) -> Path:
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def alignment_image(mel, alignment: list[dict], frames_per_token: int, frame_seconds: float) -> Image.Image:
    """mel (n_mels, T) log-mel; alignment [{"char", "frame" (token index), "prob"}] -> an RGB image.

    Token t covers mel frames [t * frames_per_token, (t + 1) * frames_per_token); each emitted
    character is drawn at its token's centre, red when unsure and green when sure.
    """
    from matplotlib import colormaps

    mel = np.asarray(mel, dtype=np.float32)
    seconds = mel.shape[1] * frame_seconds
    fig = _figure(min(max(6.0, seconds * 2.5), 16.0), 3.2)
    ax = fig.add_subplot()
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, mel.shape[0]))
    token_seconds = frames_per_token * frame_seconds
    colour = colormaps["RdYlGn"]
    for a in alignment:
        t = (a["frame"] + 0.5) * token_seconds
        ax.axvline(t, color="white", alpha=0.35, linewidth=0.8)
        ax.text(t, mel.shape[0] * 0.93, "␣" if a["char"] == " " else a["char"], ha="center", va="top",
                fontsize=12, fontweight="bold", color=colour(float(a["prob"])),
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
    ax.set_xlabel(f"seconds (one token = {token_seconds * 1000:.0f} ms)")
    ax.set_ylabel("mel bin")
    ax.set_title("Spectrogram and CTC alignment (letter colour: red = unsure, green = sure)", fontsize=10)
    return to_image(fig)


def reliability_figure(before: list[dict], after: list[dict], title: str, ece: tuple[float, float]):
    """Two reliability diagrams (bins from calibrate.reliability): accuracy against confidence."""
    fig = _figure(8.0, 3.6)
    for k, (bins, name, e) in enumerate(((before, "before", ece[0]), (after, "after temperature scaling", ece[1]))):
        ax = fig.add_subplot(1, 2, k + 1)
        width = bins[0]["hi"] - bins[0]["lo"]
        full = [b for b in bins if b["n"]]
        ax.bar([b["lo"] for b in full], [b["accuracy"] for b in full], width=width, align="edge",
               color="#4c72b0", edgecolor="black", linewidth=0.5, label="accuracy")
        ax.bar([b["lo"] for b in full], [b["confidence"] - b["accuracy"] for b in full], width=width,
               bottom=[b["accuracy"] for b in full], align="edge", color="#dd8452", alpha=0.5,
               edgecolor="black", linewidth=0.5, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"{name}: ECE {e:.3f}")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


def robustness_figure(curves: dict[str, list[dict]], metric: str, title: str, higher_is_better: bool = True,
                      names: dict | None = None):
    """curves {corruption: [{"severity", metric}]} -> one panel per corruption, severity on x."""
    names = names or {}
    fig = _figure(3.2 * len(curves), 3.0)
    for k, (name, points) in enumerate(curves.items()):
        ax = fig.add_subplot(1, len(curves), k + 1)
        labels = ["none" if p["severity"] is None else f"{p['severity']:g}" for p in points]
        ax.plot(range(len(points)), [p[metric] for p in points], "o-", color="#4c72b0")
        ax.set_xticks(range(len(points)), labels)
        ax.set(title=names.get(name, name), xlabel="severity", ylabel=metric)
        ax.set_ylim(0, 1) if higher_is_better else ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return fig


def loss_figure(stages: list[dict]):
    """Training stages ({"rows": metrics.jsonl rows, "first_step": steps before it}) -> training loss
    and validation loss per task against the step counted from the first stage; a dashed line marks
    where each later stage started from the weights of the one before."""
    fig = _figure(10.0, 3.8)
    panels = [(fig.add_subplot(1, 2, 1), "train", "training loss per task", "-"),
              (fig.add_subplot(1, 2, 2), "val", "validation loss per task", "o-")]
    tasks = sorted({k for st in stages for r in st["rows"] for k in r if k.startswith("loss_") and k != "loss_total"})
    colours = {t: f"C{i}" for i, t in enumerate(tasks)}
    for ax, kind, title, style in panels:
        for key in tasks:
            label = key[5:]  # on the first stage that has the task, so the legend names it once
            for st in stages:
                points = [(st["first_step"] + r["step"], r[key]) for r in st["rows"]
                          if r.get("kind") == kind and key in r]
                if points:
                    ax.plot(*zip(*points), style, color=colours[key], label=label, linewidth=1, markersize=3)
                    label = None
        for st in stages[1:]:
            ax.axvline(st["first_step"], color="grey", linestyle="--", linewidth=0.8)
        ax.set(xlabel="step" + (" (all stages)" if len(stages) > 1 else ""), ylabel="loss", title=title)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig
