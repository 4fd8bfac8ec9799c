"""ONNX Runtime's memory arena: what keeping it costs in memory, what dropping it costs in speed.

With its CPU arena, ONNX Runtime keeps the memory of its largest run for the life of the session:
one large frame and the process stays gigabytes larger. The Segmenter's ONNX Runtime turns the arena
off (`OnnxRuntime.session_options`); this case is the measurement behind that choice. Variants:

    arena on        ONNX Runtime's default
    arena off       enable_cpu_mem_arena = False (what the Segmenter runs)
    arena, shrunk   the arena kept, and shrunk after every run (run option
                    memory.enable_memory_arena_shrinkage = cpu:0)
    no arena, no memory pattern   also enable_mem_pattern = False

Speed: the packaged default model on video-sized frames (360x480), every variant timed round-robin
in one process (medians), as ratios against "arena on". Memory: each variant in a fresh process,
the resident set after a few video frames, after one large frame (3000x3000; quick: 1500x1500) and
after more video frames, and the peak during the large one (VmHWM).

    python -m fastseg bench --only onnxruntime_arena --out DIR
"""
from __future__ import annotations

import json
import subprocess
import sys

from .measure import Agreement, Figure, Reference, Row, dims, measure
from .memory import _status

VARIANTS = ("arena off", "arena on", "arena, shrunk", "no arena, no memory pattern")
CHOSEN, DEFAULT = "arena off", "arena on"
VIDEO = (360, 480)
LARGE = {True: (1500, 1500), False: (3000, 3000)}


def _session(variant: str):
    """A function running the default model's logits graph on a normalised batch, as `variant`."""
    import onnxruntime as ort
    import torch

    from ..models import pretrained
    from ..segmenter import onnx_cache
    from ..segmenter.runtimes import OnnxRuntime

    model = pretrained.load(pretrained.DEFAULT)  # as the default Segmenter loads it: its cached graph
    options = OnnxRuntime.session_options(torch.get_num_threads(), spinning=True)
    options.enable_cpu_mem_arena = variant in ("arena on", "arena, shrunk")
    if variant == "no arena, no memory pattern":
        options.enable_mem_pattern = False
    session = onnx_cache.load_logits_graph(
        model, lambda graph: ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"]))
    run_options = None
    if variant == "arena, shrunk":
        run_options = ort.RunOptions()
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(x):
        return session.run(None, {"image": x.numpy()}, run_options)[0]

    return run


def _frame(h: int, w: int, seed: int = 0):
    import torch

    return torch.randn((1, 3, h, w), generator=torch.Generator().manual_seed(seed))


def _memory_child(variant: str, h: str, w: str) -> dict:
    """Resident bytes of one variant around one large frame, in this (fresh) process."""
    run = _session(variant)
    video = _frame(*VIDEO)
    for _ in range(3):
        run(video)
    before = _status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak mark (VmHWM) restarts from here
    except OSError:
        pass
    run(_frame(int(h), int(w), seed=1))
    peak, after = _status("VmHWM"), _status("VmRSS")
    for _ in range(3):
        run(video)
    return {"video_bytes": before, "large_peak_bytes": peak, "after_large_bytes": after,
            "after_more_video_bytes": _status("VmRSS")}


def memory(variant: str, large: tuple[int, int]) -> dict:
    command = [sys.executable, "-m", __name__, variant, *(str(v) for v in large)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def onnxruntime_arena(quick: bool) -> list[Row | Figure]:
    import numpy as np

    runs = {v: _session(v) for v in VARIANTS}
    x = _frame(*VIDEO)
    want = runs[DEFAULT](x)
    agreement = {v: Agreement.exact(bool(np.array_equal(runs[v](x), want))) for v in VARIANTS if v != DEFAULT}
    rows = measure("ONNX Runtime memory arena: default model", dims(VIDEO),
                   {v: (lambda r=runs[v]: r(x)) for v in VARIANTS if v != DEFAULT},
                   {DEFAULT: Reference(lambda: runs[DEFAULT](x), agreement)}, rounds=5 if quick else 41)
    large = LARGE[quick]
    figures = []
    for v in VARIANTS:
        m = memory(v, large)
        mib = {k: b / 2**20 for k, b in m.items()}
        text = (f"{v}: resident {mib['video_bytes']:.0f} MiB on video frames, peak {mib['large_peak_bytes']:.0f} "
                f"MiB on a {dims(large)} frame, {mib['after_large_bytes']:.0f} MiB after it, "
                f"{mib['after_more_video_bytes']:.0f} MiB after more video frames")
        # The chosen variant must give the large frame's memory back: it may keep less than half of what
        # the large frame added (the arena keeps nearly all of it). Not less than a quarter: glibc's own
        # heap keeps some freed pages, as much as +99 MiB of a 395 MiB increment in one CI run.
        ok = v != CHOSEN or m["after_more_video_bytes"] - m["video_bytes"] < 0.5 * (m["large_peak_bytes"] -
                                                                                   m["video_bytes"])
        figures.append(Figure("ONNX Runtime memory arena: resident set", f"{v}, {dims(large)}", text, ok, m))
    return rows + figures


if __name__ == "__main__":
    print(json.dumps(_memory_child(*sys.argv[1:])))
