"""Cold start of the default Segmenter: fresh processes, each importing fastseg, building
`Segmenter(runtime=...)` and predicting one 480x360 frame; the time of each step (medians over the
processes) with the CPU's features, printed and written to a results file. The README's cold-start
sentence comes from the committed one:

    .venv/bin/python benchmarks/cold_start.py --runtime auto onnxruntime \
        --out benchmarks/results/cold_start.json

A model that runs in ONNX Runtime exports its graph on the first Segmenter only (cached after it):
the first process shows that cost, the median does not (`--runs` >= 3).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from fastseg import Segmenter
t1 = time.perf_counter()
seg = Segmenter(runtime=sys.argv[1])
t2 = time.perf_counter()
seg.predict(np.zeros((360, 480, 3), np.uint8))
t3 = time.perf_counter()
print(json.dumps({"runtime": seg.runtime.name, "import": t1 - t0, "build": t2 - t1, "first predict": t3 - t2}))
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime", nargs="+", default=["auto"], help="runtime= values to start (default: auto)")
    p.add_argument("--runs", type=int, default=5, help="fresh processes per runtime")
    p.add_argument("--out", type=Path, help="a JSON results file (the machine, the commit, every process)")
    args = p.parse_args(argv)

    from fastseg.bench import results

    started, machine = results.now(), results.machine()
    print(f"cpu: {' '.join(machine['cpu']['flags'])}")
    found = {}
    for runtime in args.runtime:
        runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD, runtime], check=True, capture_output=True,
                                          text=True).stdout.strip().splitlines()[-1]) for _ in range(args.runs)]
        steps = ("import", "build", "first predict")
        medians = {k: statistics.median(r[k] for r in runs) for k in steps}
        first = runs[0]
        print(f"runtime={runtime!r} ({first['runtime']}), {args.runs} processes, medians: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items())
              + f"; build + first predict {medians['build'] + medians['first predict']:.2f} s"
              + f" (first process: {first['build'] + first['first predict']:.2f} s)")
        found[runtime] = {"medians_s": medians, "processes": runs}
    if args.out:
        results.write(args.out, {"date": started.strftime("%Y-%m-%dT%H:%M:%SZ"), **results.git_commit(),
                                 "machine": machine, "runs": args.runs, "runtimes": found})


if __name__ == "__main__":
    main()
