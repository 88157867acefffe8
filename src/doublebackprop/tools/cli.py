"""Sub-commands of the engine tools: ``bench``, ``complexity``, ``landscape``, ``engines-demo``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark engines × penalties × models (JSON + table)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run")
    p.add_argument("--quick", action="store_true", help="smaller CPU batches")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per case (median)")
    p.add_argument("--models", nargs="*", default=None, help="substrings of model names to run")
    p.add_argument(
        "--penalties", nargs="*", default=None, help="substrings of penalty names to run"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=Path("results/bench"), help="output folder")
    p.set_defaults(func=_bench)

    p = sub.add_parser("complexity", help="operator counts per penalty (markdown table)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown here")
    p.add_argument("--width", type=int, default=256, help="hidden width of the MLP")
    p.add_argument("--batch", type=int, default=64, help="batch size")
    p.set_defaults(func=_complexity)

    p = sub.add_parser("landscape", help="penalty along a line in parameter space (PNG)")
    p.add_argument("--out", type=Path, default=Path("results/landscape"), help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the net and the direction")
    p.add_argument("--points", type=int, default=801, help="points along the line (at least 41)")
    p.set_defaults(func=_landscape)

    p = sub.add_parser("engines-demo", help="digits CNN trained through each engine")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per engine")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split and the weights")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/engines-demo"),
        help="folder for engines_demo.json",
    )
    p.set_defaults(func=_engines_demo)


def _bench(args: argparse.Namespace) -> int:
    import torch

    from doublebackprop.tools import bench

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    cases = bench.default_cases(device, quick=args.quick)
    if args.models:
        names = [c.name for c in cases]
        cases = [c for c in cases if any(s.lower() in c.name.lower() for s in args.models)]
        if not cases:
            raise ValueError(
                f"--models {args.models}: no benchmark model matches; the models are {names}"
            )
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    rows = bench.run_benchmark(
        cases, device=device, repeats=args.repeats, progress=print, penalties=args.penalties
    )
    print(bench.format_table(rows, device))
    settings = {
        "quick": args.quick,
        "repeats": args.repeats,
        "models": args.models,
        "penalties": args.penalties,
        "threads": torch.get_num_threads(),
    }
    bench.write_json(rows, device, args.out / f"bench-{device}.json", settings=settings)
    print(f"wrote {args.out / f'bench-{device}.json'}")
    return 0


def _complexity(args: argparse.Namespace) -> int:
    from doublebackprop.tools.complexity import complexity_table, format_markdown

    rows = complexity_table(width=args.width, batch=args.batch)
    text = format_markdown(rows, width=args.width, depth=3, batch=args.batch)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


def _landscape(args: argparse.Namespace) -> int:
    from doublebackprop.tools.landscape_plot import landscape_figure

    summary = landscape_figure(args.out, seed=args.seed, points=args.points, progress=print)
    print(json.dumps(summary, indent=1))
    return 0


def _engines_demo(args: argparse.Namespace) -> int:
    from doublebackprop.tools.engines_demo import format_rows, run_engine_demo

    rows = run_engine_demo(epochs=args.epochs, seed=args.seed)
    print(format_rows(rows))
    out = getattr(args, "out", None)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "engines_demo.json").write_text(
            json.dumps([asdict(r) for r in rows], indent=1)
        )
    return 0
