"""The default Segmenter's memory at its pixel budget: in a fresh process per runtime, the resident
set after a 480x360 frame, then the peak (VmHWM) while one 4096x4096 frame (`max_pixels`' default)
runs whole at its own size (`scale=1`). The README's and `fastseg/segmenter/budget.py`'s figures
come from the committed results file:

    .venv/bin/python benchmarks/peak_memory.py --runtime auto onnxruntime \\
        --out benchmarks/results/peak_memory.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys
import numpy as np
from fastseg import Segmenter

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

side = int(sys.argv[2])
seg = Segmenter(runtime=sys.argv[1], scale=1)
seg.predict(np.zeros((360, 480, 3), np.uint8))
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak mark restarts here
frame = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
assert seg.predict(frame).labels.shape == (side, side)
print(json.dumps({"runtime": seg.runtime.name, "resident_bytes": before, "peak_bytes": status("VmHWM")}))
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime", nargs="+", default=["auto"], help="runtime= values to measure (default: auto)")
    p.add_argument("--side", type=int, default=4096, help="the large frame's side (default: 4096)")
    p.add_argument("--out", type=Path, help="a JSON results file (the machine, the commit, the figures)")
    args = p.parse_args(argv)

    from fastseg.bench import results

    started, machine = results.now(), results.machine()
    print(f"cpu: {' '.join(machine['cpu']['flags'])}")
    found = {}
    for runtime in args.runtime:
        out = subprocess.run([sys.executable, "-c", CHILD, runtime, str(args.side)], check=True,
                             capture_output=True, text=True).stdout
        m = json.loads(out.strip().splitlines()[-1])
        above = m["peak_bytes"] - m["resident_bytes"]
        print(f"runtime={runtime!r} ({m['runtime']}): resident {m['resident_bytes'] / 2**30:.2f} GiB after a "
              f"480x360 frame, peak {m['peak_bytes'] / 2**30:.2f} GiB on a {args.side}x{args.side} frame, "
              f"{above / 2**30:.2f} GiB above it")
        found[runtime] = dict(m, peak_above_resident_bytes=above)
    if args.out:
        results.write(args.out, {"date": started.strftime("%Y-%m-%dT%H:%M:%SZ"), **results.git_commit(),
                                 "machine": machine, "side": args.side, "runtimes": found})


if __name__ == "__main__":
    main()
