"""Peak memory of one call, measured in a fresh process (the parent's allocations would hide it):
`python -m fastseg.bench.memory crf fastseg|pydensecrf [IMAGE]` and
`python -m fastseg.bench.memory upsample_argmax` print the growth of the resident set in bytes.

ru_maxrss cannot see a call (importing torch peaks higher), so the CRF probe samples the resident set
every 0.2 ms from a thread during the call; the upsample + argmax probe resets the kernel's peak mark
(VmHWM, through /proc/self/clear_refs) just before its call instead, and prints null where that is
not allowed."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from .measure import Figure, dims


def peak_growth(probe: str, *args) -> int | None:
    """Bytes the probe's call added to the peak resident set, in a child process."""
    command = [sys.executable, "-m", __name__, probe, *(str(a) for a in args if a is not None)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _resident() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _crf_child(which: str, image_path: str | None = None) -> int:
    import numpy as np
    import torch

    from ..crf import DenseCRF
    from .crf import noisy_softmax
    from .measure import smooth_image

    torch.set_num_threads(1)
    if image_path is None:
        image = smooth_image(360, 480, seed=1)
    else:
        from PIL import Image

        image = np.array(Image.open(image_path).convert("RGB"))
    probs = noisy_softmax(np.zeros(image.shape[:2], np.int64))
    model = DenseCRF()
    fn = model.reference if which == "pydensecrf" else model
    fn(np.ascontiguousarray(image[:8, :8]), np.ascontiguousarray(probs[:, :8, :8]))  # libraries loaded, code paged in
    peak, done = [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _resident())
            time.sleep(0.0002)

    base = _resident()
    watcher = threading.Thread(target=watch)
    watcher.start()
    fn(image, probs)
    done.set()
    watcher.join()
    return max(peak[0], _resident()) - base


UPSAMPLE = {True: ((1, 19, 32, 64), (256, 512)), False: ((1, 19, 128, 256), (1024, 2048))}


def _upsample_child(quick: str) -> int | None:
    import torch

    from ..ops import upsample_argmax

    shape, size = UPSAMPLE[quick == "quick"]
    upsample_argmax(torch.randn(1, 2, 4, 4), (8, 8))  # threads started, code paged in
    x = torch.randn(*shape)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak mark (VmHWM) to the current resident set
    except OSError:  # not Linux, or a sandbox that forbids it
        return None
    before = _status("VmRSS")
    labels = upsample_argmax(x, size)
    return _status("VmHWM") - before - labels.numel() * labels.element_size()


def upsample_argmax_memory(quick: bool) -> list[Figure]:
    """Memory beyond input and output of one upsample + argmax call (the peak-RSS growth minus the
    output, page-granular; at most 0 means no growth): under 1 MiB, where the materialised full-size
    logits would take hundreds."""
    shape, size = UPSAMPLE[quick]
    extra = peak_growth("upsample_argmax", "quick" if quick else "full")
    logits_mib = shape[0] * shape[1] * size[0] * size[1] * 4 / 2**20
    if extra is None:
        text, ok = "n/a: /proc/self/clear_refs cannot be written here", True
    else:
        text, ok = (f"peak memory beyond input and output {max(0, extra) / 1024:.1f} KiB "
                    f"(the full-size logits would take {logits_mib:.0f} MiB)"), extra < 2**20
    return [Figure("upsample + argmax extra memory", f"{dims(shape)} -> {dims(size)}", text, ok,
                   {"extra_bytes": extra, "full_logits_mib": logits_mib})]


if __name__ == "__main__":
    probes = {"crf": _crf_child, "upsample_argmax": _upsample_child}
    print(json.dumps(probes[sys.argv[1]](*sys.argv[2:])))
