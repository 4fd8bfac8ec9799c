"""Cold start of the default Segmenter: fresh processes, each importing fastseg, building
`Segmenter(runtime=...)` and predicting one 480x360 frame; the time of each step (medians over the
processes) with the CPU's features. The README's cold-start sentence comes from this:

    .venv/bin/python benchmarks/cold_start.py --runtime auto onnxruntime

A model that runs in ONNX Runtime exports its graph on the first Segmenter only (cached after it):
the first process shows that cost, the median does not (`--runs` >= 3).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

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
    args = p.parse_args(argv)

    from fastseg.bench.cpu_engines import cpu_features

    print(f"cpu: {cpu_features()}")
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


if __name__ == "__main__":
    main()
