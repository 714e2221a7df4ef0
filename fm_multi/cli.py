"""The `fm-multi` command: one argparse program, one subcommand per concern.

Each subcommand lives beside the code it drives and registers itself through `add_cli(sub)`;
heavy imports happen inside the handlers so `fm-multi --help` stays fast.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys


def info(args) -> int:
    from fm_multi.checkpoint import load_checkpoint

    model, tokenizer, labels, folder = load_checkpoint(args.checkpoint)
    counts = model.parameter_counts()
    report = {"checkpoint": str(folder), "config": model.config.to_dict(), "parameters": counts,
              "vocab_size": tokenizer.get_vocab_size(), "labels": labels}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"checkpoint: {folder}")
    print("config:")
    for k, v in report["config"].items():
        print(f"  {k:<20} {v}")
    print("parameters:")
    for k, v in counts.items():
        print(f"  {k:<20} {v:>12,}")
    for task, names in labels.items():
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        print(f"{task} labels ({len(names)}): {shown}")
    return 0


def export(args) -> int:
    """Write a checkpoint's weights in --dtype (bf16 halves the size) to --out, with its tokenizer, labels
    and the rest of its config.json (training notes, calibration); --average-with first averages them
    with another checkpoint's (see average_weights)."""
    import torch

    from fm_multi.checkpoint import SPEECH_LM, load_checkpoint, save_checkpoint

    model, tokenizer, labels, folder = load_checkpoint(args.checkpoint)
    if args.average_with:
        average_weights(model, tokenizer, labels, args.average_with, args.weight)
    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    meta = {k: v for k, v in meta.items() if k not in ("format_version", "model_config")}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.dtype]
    out = save_checkpoint(args.out, model, tokenizer, labels, dtype=dtype, meta=meta)
    if (folder / SPEECH_LM).exists():  # speech-to-text's language model travels with the weights
        shutil.copyfile(folder / SPEECH_LM, out / SPEECH_LM)
    size = (out / "model.safetensors").stat().st_size / 1e6
    print(f"wrote {out}: model.safetensors {size:.1f} MB ({args.dtype}); its README.md is a placeholder "
          f"until `fm-multi card --checkpoint {out} --data DIR` measures it")
    return 0


def average_weights(model, tokenizer, labels: dict, other: str, weight: float) -> None:
    """model's weights <- (1 - weight) x its own + weight x those of checkpoint `other`, which must have
    the same config, tokenizer and labels: e.g. a run fine-tuned from a checkpoint, averaged with it."""
    import torch

    from fm_multi.checkpoint import load_checkpoint

    if not 0 <= weight <= 1:
        raise ValueError(f"--weight must be in [0, 1], got {weight}")
    theirs, their_tokenizer, their_labels, folder = load_checkpoint(other)
    if theirs.config != model.config or their_labels != labels or their_tokenizer.to_str() != tokenizer.to_str():
        raise ValueError(f"{folder} has another config, tokenizer or labels: only checkpoints of one model "
                         "can be averaged")
    with torch.no_grad():  # parameters() lists a tied tensor once
        for mine, their in zip([*model.parameters(), *model.buffers()], [*theirs.parameters(), *theirs.buffers()]):
            if mine.is_floating_point():
                mine.mul_(1 - weight).add_(their, alpha=weight)


def build_parser() -> argparse.ArgumentParser:
    from fm_multi.bench import add_cli as add_bench
    from fm_multi.card import add_cli as add_card
    from fm_multi.data.build import add_cli as add_data
    from fm_multi.evaluate import add_cli as add_eval
    from fm_multi.speech_lm import add_cli as add_speech_lm
    from fm_multi.train import add_cli as add_train
    from fm_multi.ui.app import add_cli as add_serve

    parser = argparse.ArgumentParser(prog="fm-multi", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="print a checkpoint's config, parameter counts and labels")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder or Hub repo id (default: assets/checkpoint)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=info)
    p = sub.add_parser("export", help="write a checkpoint with its weights in bf16, fp16 or fp32 (e.g. a "
                                      "run's final/ for shipping)")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder or Hub repo id, e.g. runs/x/final")
    p.add_argument("--out", required=True, help="folder to write (files of the same names are replaced)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16",
                   help="weight type on disk (default: bf16, half the size; loading casts back to fp32)")
    p.add_argument("--average-with", default=None, metavar="CHECKPOINT",
                   help="average the weights with this checkpoint's (same config, tokenizer and labels), e.g. the "
                        "one a run started from")
    p.add_argument("--weight", type=float, default=0.5,
                   help="the --average-with checkpoint's share of the average (default: 0.5)")
    p.set_defaults(func=export)
    add_data(sub)
    add_train(sub)
    add_speech_lm(sub)
    add_eval(sub)
    add_serve(sub)
    add_bench(sub)
    add_card(sub)
    return parser


def main(argv=None) -> int:
    from fm_multi.checkpoint import CheckpointError
    from fm_multi.pipeline import DEFAULT_CHECKPOINT

    args = build_parser().parse_args(argv)
    if getattr(args, "checkpoint", "unset") is None:
        args.checkpoint = str(DEFAULT_CHECKPOINT)
    try:
        return args.func(args) or 0
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"fm-multi {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
