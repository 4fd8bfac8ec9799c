"""`fastseg bench`: fastseg's ops and models against their references on this machine.

    fastseg bench [--quick] [--only crf,lraspp] [--model FILE] [--out DIR]

Every row times fastseg and its reference round-robin in the same run (medians), after checking that
they agree; the speed-up is reference time / fastseg time. Writes into --out: bench.md (the table),
bench.json (rows and machine) and bench.png (the speed-ups as a bar chart). Exit status 1 when any
row's results disagree. --quick: small shapes and few rounds (about a minute).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

HELP = "fastseg's ops and models against their references: table and plot of speed-ups"


def add_arguments(parser) -> None:
    from ..bench import CASES

    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds (about a minute)")
    parser.add_argument("--only", default=None, metavar="CASE[,CASE]",
                        help=f"run only these cases, of: {', '.join(CASES)}")
    parser.add_argument("--model", default=None,
                        help="a fastseg model file for the default-model row (default: the packaged model)")
    parser.add_argument("--out", type=Path, default=Path("runs") / "bench",
                        help="folder for bench.md, bench.json, bench.png (default: runs/bench)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _machine() -> dict:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "load_average": list(os.getloadavg())}


def _header(machine: dict, quick: bool) -> str:
    return (f"fastseg bench{' --quick' if quick else ''}: {machine['cores']} cores, {machine['torch_threads']} "
            f"torch threads, torch {machine['torch']}; medians of interleaved rounds, speed-up = reference / "
            f"fastseg (load average {machine['load_average'][0]:.2f} at the start)")


def run(args) -> int:
    from .._atomic import write_text
    from ..bench import CASES, format_table, run_cases

    names = CASES if args.only is None else tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        print(f"fastseg bench: error: --only: unknown case(s) {unknown or [args.only]}; known: {', '.join(CASES)}",
              file=sys.stderr)
        return 2
    if args.model is not None and not os.path.isfile(args.model):
        print(f"fastseg bench: error: --model: {args.model} is not a file", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    machine = _machine()
    started = time.perf_counter()
    rows = run_cases(args.quick, names, progress=not args.no_progress, model=args.model)
    table = format_table(rows)
    header = _header(machine, args.quick)
    print(f"\n{header}\n\n{table}")
    write_text(args.out / "bench.md", f"{header}\n\n{table}\n")
    report = {"quick": args.quick, "machine": machine, "seconds": time.perf_counter() - started,
              "rows": [r.as_dict() for r in rows]}
    write_text(args.out / "bench.json", json.dumps(report, indent=1))
    if rows:
        from ..plots import speedup_figure

        speedup_figure([f"{r.case}\nvs {r.reference}" for r in rows], [r.ratio for r in rows],
                       args.out / "bench.png", title=header.replace("; ", "\n", 1), ok=[r.ok for r in rows])
    print(f"\nwrote {args.out}/bench.md, bench.json" + (", bench.png" if rows else ""))
    bad = [r for r in rows if not r.ok]
    for r in bad:
        print(f"fastseg bench: {r.case} vs {r.reference}: results differ ({r.agreement})", file=sys.stderr)
    return 1 if bad else 0


def ops_table() -> int:
    """The fused ops against their references as a printed table (full shapes): what `fastseg demo`
    printed before the default model existed."""
    from ..bench import OP_CASES, format_table, run_cases

    rows = run_cases(False, OP_CASES)
    import torch

    print(f"fastseg: fused ops vs their references on this machine ({torch.get_num_threads()} threads, "
          f"medians of interleaved runs)\n\n{format_table(rows)}")
    return 0 if all(r.ok for r in rows) else 1
