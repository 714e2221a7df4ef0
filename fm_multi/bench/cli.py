"""`fm-multi bench`: run the benchmarks, print a markdown table, optionally write JSON.

Everything is imported inside the functions so `fm-multi --help` stays fast.
"""
from __future__ import annotations


def add_cli(sub) -> None:
    from fm_multi.bench.runner import GROUPS

    p = sub.add_parser("bench", help="speed against timm, GPT-2, pocketsphinx, Whisper; latencies; training",
                       description="Benchmark fm_multi against peer implementations of the same work. "
                                   "speedup = peer time / our time (> 1: we are faster); for rates "
                                   "(tok/s, samples/s) ours / peer, the same ratio.")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats, shorter runs and no torch.compile group (a few minutes on 2 cores)")
    p.add_argument("--json", metavar="FILE", help="also write the full report (machine, date, rows) as JSON")
    p.add_argument("--checkpoint", metavar="DIR", default="",
                   help="checkpoint folder or Hub repo id (default: random weights at --preset dimensions)")
    p.add_argument("--preset", default="small", help="model preset when no --checkpoint is given (default: small)")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=list(GROUPS),
                   help="run only these groups: " + ", ".join(GROUPS))
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads, set once for every side (default: the physical cores, or 1 when the "
                        "load average already exceeds the cores)")
    p.add_argument("--device", default="cpu",
                   help="cpu or cuda (default: cpu; pocketsphinx always runs on the CPU)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys
    import tempfile
    from pathlib import Path

    from fm_multi.bench.inputs import random_checkpoint
    from fm_multi.bench.runner import GROUPS, QUICK_SKIPS, run_groups
    from fm_multi.bench.timing import FULL, QUICK, decide_threads, markdown_table
    from fm_multi.config import preset
    from fm_multi.pipeline import Pipeline

    threads_reason = decide_threads(args.threads)  # once; ours and every peer share it
    names = args.only or [g for g in GROUPS if not (args.quick and g in QUICK_SKIPS)]

    def log(msg: str) -> None:  # progress goes to stderr so stdout holds only the results
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or str(random_checkpoint(Path(tmp) / "checkpoint", preset(args.preset)))
        pipe = Pipeline.from_pretrained(checkpoint, device=args.device)
        report = run_groups(pipe, QUICK if args.quick else FULL, names, log)
    if not args.checkpoint:
        report["checkpoint"] = f"random weights, preset {args.preset!r}"
    report["mode"] = "quick" if args.quick else "full"
    m = report["machine"]
    m["threads_reason"] = threads_reason
    print(f"fm-multi bench ({report['mode']}), {m['date']}: {m['cpu']}, {m['cores']} cores, "
          f"torch {m['torch']}, {m['threads']} threads ({threads_reason}), GPU {m['gpu'] or 'none'}, "
          f"device {args.device}; load average {m.get('load_average_1m')} -> {m.get('load_average_1m_end')}; "
          f"checkpoint: {report['checkpoint']}; {report['seconds']:.0f} s\n")
    print(markdown_table(report["rows"]))
    for s in report["skipped"]:
        print(f"\nskipped {s['group']}: {s['reason']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if any(s["reason"].startswith("failed") for s in report["skipped"]) else 0
