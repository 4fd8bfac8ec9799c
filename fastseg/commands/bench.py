"""`fastseg bench`: fastseg's ops and models against their references on this machine.

    fastseg bench [--quick] [--only crf,lraspp] [--model FILE] [--camvid DIR] [--out DIR]
    fastseg bench --stream [--frames 500] [--camvid DIR]     per-frame latency on a CamVid video

The cases are those of `pytest benchmarks/` (fastseg.bench). Every row times fastseg and its
reference round-robin in the same run (medians), after checking that they agree; the speed-up is
reference time / fastseg time. Writes into --out: bench.json (the results file: machine, commit, rows
and figures), bench.md (the table) and bench.png (the speed-ups as a bar chart). Exit status 1 when
any row's results disagree or a figure's check fails.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def add_arguments(parser) -> None:
    from ..bench import CASES

    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds (what CI runs)")
    parser.add_argument("--only", default=None, metavar="CASE[,CASE]",
                        help=f"run only these cases, of: {', '.join(CASES)} (default: all)")
    parser.add_argument("--model", default=None,
                        help="a fastseg model file for the default_model case (default: the packaged model)")
    parser.add_argument("--camvid", type=Path, default=None, metavar="DIR",
                        help="a CamVid folder (with val/ and valannot/): the CRF cases use its frames, and the "
                             "cases that need it (crf_camvid, scale_camvid) run (default: none; synthetic frames, "
                             "those cases skipped)")
    parser.add_argument("--stream", action="store_true",
                        help="only the per-frame latency of Segmenter.stream (offline and live) on a video made "
                             "from CamVid frames (the stream case; --camvid defaults to ../shared/data/camvid)")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames of the stream case's video (default: 500; 30 with --quick)")
    parser.add_argument("--out", type=Path, default=Path("runs") / "bench",
                        help="folder for bench.json, bench.md, bench.png (default: runs/bench)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _error(message: str) -> int:
    print(f"fastseg bench: error: {message}", file=sys.stderr)
    return 2


def _names(args) -> tuple[list[str] | None, str | None]:
    from ..bench import CASES

    if args.stream:
        if args.only is not None:
            return None, "--stream and --only: give one of the two"
        if args.camvid is None:
            from .demo import find_camvid

            args.camvid = find_camvid(None)
        if args.camvid is None:
            return None, "--stream needs CamVid frames: --camvid DIR (not found at ../shared/data/camvid)"
        args.only = "stream"

    if args.only is None:  # every case whose required options are given
        given = {"camvid": args.camvid, "model": args.model}
        runnable = [n for n, c in CASES.items()
                    if all(given.get(k) is not None for k, req in c.options.items() if req)]
        return runnable, None
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        return None, f"--only: unknown case(s) {unknown or [args.only]}; known: {', '.join(CASES)}"
    if args.camvid is None:
        needing = [n for n in names if CASES[n].options.get("camvid")]
        if needing:
            return None, f"--only: {', '.join(needing)} need(s) --camvid DIR"
    return names, None


def run(args) -> int:
    from tqdm import tqdm

    from .._atomic import write_text
    from ..bench import results, run_case
    from ..bench.measure import Figure, Row

    names, problem = _names(args)
    if problem:
        return _error(problem)
    if args.model is not None and not os.path.isfile(args.model):
        return _error(f"--model: {args.model} is not a file")
    if args.camvid is not None and not (args.camvid / "val").is_dir():
        return _error(f"--camvid: {args.camvid} has no val/ folder")
    args.out.mkdir(parents=True, exist_ok=True)
    machine, started, t0 = results.machine(), results.now(), time.perf_counter()
    items = []
    bar = tqdm(names, desc="bench", unit="case", disable=args.no_progress)
    for name in bar:
        bar.set_postfix_str(name)
        items += run_case(name, args.quick, model=args.model, camvid=args.camvid, frames=args.frames)
    content = results.results(args.quick, items, time.perf_counter() - t0, started, machine)
    rows = [r for r in items if isinstance(r, Row)]
    figures = [f for f in items if isinstance(f, Figure)]
    header, table = results.header(content), results.markdown(rows, figures)
    print(f"\n{header}\n\n{table}")
    results.write(args.out / "bench.json", content)
    write_text(args.out / "bench.md", f"{header}\n\n{table}\n")
    if rows:
        from ..plots import speedup_figure

        speedup_figure([f"{r.case}: {r.ours}\nvs {r.reference}" for r in rows], [r.ratio for r in rows],
                       args.out / "bench.png", title=header.replace("; ", "\n", 1), ok=[r.ok for r in rows])
    print(f"\nwrote {args.out}/bench.json, bench.md" + (", bench.png" if rows else ""))
    bad = [i for i in items if not i.ok]
    for i in bad:
        what = f"{i.case}: {i.ours} vs {i.reference}: results differ ({i.agreement.text})" if isinstance(i, Row) \
            else f"{i.case}: check failed ({i.text})"
        print(f"fastseg bench: {what}", file=sys.stderr)
    return 1 if bad else 0
