"""The Segmenter against the CPU inference engines users would otherwise pick, in fp32 and bf16.

One uint8 frame in, labels out on every side. The peers run the model's whole pipeline as one ONNX
graph (`fastseg.export.export_onnx`: normalisation, the fused model, resize and argmax in the graph),
compiled for the frame's static shape: ONNX Runtime in fp32 (2 intra-op threads, its default
spinning), OpenVINO with `INFERENCE_PRECISION_HINT` pinned to "f32" and to "bf16" (it would pick
bf16 by itself on CPUs with AVX512-BF16 or AMX), the latency hint and torch's thread count.
fastseg's candidates are the Segmenter in fp32 (its default runtime, and each of "torch",
"onnxruntime" and "openvino" the default is not) and in bf16 (its default bf16 runtime, and
torch's oneDNN bf16). Every candidate is timed interleaved in the same run with an idle pause after
each call (thread pools of one engine must not spin into the next one's time).

Rows: each fp32 candidate against the fp32 peers; each bf16 candidate against every peer; the
Segmenter's default fp32 and bf16 runtimes against their own network alone (a ratio just under 1:
the share of preprocessing, fused tail and glue). The shape column names the CPU's reduced-precision
features, so every figure carries them.
"""
from __future__ import annotations

import io
import sys

import numpy as np
import torch

from .measure import Agreement, Reference, Row, measure, smooth_image
from .timing import SETTLE

FP32_EQUAL = 0.999  # fp32 engines differ only in summation order
# bf16 against fp32: the packaged model (trained weights, real margins) keeps nearly every label; a
# random-weight model has near-tied logits everywhere, so there the figure is reported, not held
BF16_EQUAL = {"trained": 0.99, "random": 0.3}
FEATURES = ("avx2", "avx512f", "avx512vnni", "avx512bf16", "avx512fp16", "amx-bf16", "amx-int8")


def cpu_features() -> str:
    """The reduced-precision features of this CPU, as fastseg asks the CPU itself."""
    try:
        from .. import _cpu
    except ImportError:
        return "unknown"
    return " ".join(f for f in FEATURES if _cpu.has(f)) or "none of " + " ".join(FEATURES)


def _peers(model, image: np.ndarray) -> dict:
    """name -> (labels function, precision), for the peers that are installed."""
    from ..export import export_onnx
    from ..segmenter.openvino_runtime import read_onnx

    buffer = io.BytesIO()
    export_onnx(model, buffer)
    graph, batch, threads = buffer.getvalue(), image[None], torch.get_num_threads()
    peers: dict = {}
    try:
        import onnxruntime as ort
    except ImportError:
        print("bench: onnxruntime is not installed: no ONNX Runtime rows", file=sys.stderr)
    else:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        peers["onnxruntime fp32 (argmax in graph)"] = (lambda: session.run(None, {"image": batch})[0][0], "fp32")
    try:
        import openvino as ov
    except ImportError:
        print("bench: openvino is not installed: no OpenVINO rows", file=sys.stderr)
        return peers
    core = ov.Core()
    for hint, precision in (("f32", "fp32"), ("bf16", "bf16")):
        net = read_onnx(core, graph)
        net.reshape({net.inputs[0].any_name: list(batch.shape)})
        compiled = core.compile_model(net, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
                                                   "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        request = compiled.create_infer_request()
        peers[f"openvino {hint} (argmax in graph)"] = (
            lambda request=request: request.infer({0: batch})[0][0].copy(), precision)
    return peers


def _ours(model) -> dict:
    """name -> (Segmenter, precision): the fp32 and bf16 candidates this machine runs."""
    from .. import Segmenter
    from ..segmenter import openvino_runtime
    from ..segmenter.precision import native_bf16

    default = Segmenter(model)
    segs = {"fastseg fp32": (default, "fp32")}
    others = ("torch", "onnxruntime") + (("openvino",) if openvino_runtime.available() else ())
    for other in others:  # the runtimes "auto" did not pick
        if other != default.runtime.name:
            segs[f"fastseg fp32 (runtime='{other}')"] = (Segmenter(model, runtime=other), "fp32")
    if native_bf16():
        segs["fastseg bf16"] = (Segmenter(model, precision="bf16"), "bf16")
        segs["fastseg bf16 (runtime='torch')"] = (Segmenter(model, precision="bf16", runtime="torch"), "bf16")
    return segs


def _network_alone(seg, image: np.ndarray):
    """The Segmenter's runtime alone on the frame already preprocessed (what the engine costs without
    fastseg's preprocessing, tail and glue), and the labels its logits give."""
    from .. import ops

    with torch.inference_mode():
        x = seg.preprocess(torch.from_numpy(image[None]), hwc=True)

    def network():
        with torch.inference_mode(), seg.runtime.kernel_threads():
            return seg.runtime(x)

    labels = ops.upsample_argmax(network(), size=tuple(x.shape[2:]), align_corners=seg.align_corners)[0]
    return network, labels.numpy()


def race(case: str, model, hw: tuple[int, int], rounds: int, weights: str) -> list[Row]:
    """fastseg's fp32 / bf16 candidates and the peers on one smooth uint8 frame of size hw; for the
    Segmenter's default runtimes, also their network alone (the cost of everything around it)."""
    image = smooth_image(*hw, seed=0)
    segs = _ours(model)
    peers = _peers(model, image)
    for name in ("fastseg fp32", "fastseg bf16"):
        if name in segs:
            seg, precision = segs[name]
            network, labels = _network_alone(seg, image)
            peers[f"{name}: its network alone"] = (network, precision, labels)
    ours = {name: (lambda seg=seg: seg.predict(image)) for name, (seg, _) in segs.items()}
    our_labels = {name: seg.predict(image).labels for name, (seg, _) in segs.items()}
    references = {}
    for name, (fn, peer_precision, *labels) in peers.items():
        theirs = labels[0] if labels else fn()
        agreements = {}
        for o, (_, our_precision) in segs.items():
            same = our_precision == peer_precision == "fp32"
            agreements[o] = Agreement.labels(our_labels[o], theirs, FP32_EQUAL if same else BF16_EQUAL[weights])
        references[name] = Reference(fn, agreements)
    shape = f"{hw[1]}x{hw[0]} uint8 -> labels, {torch.get_num_threads()} threads, cpu: {cpu_features()}"
    rows = measure(case, shape, ours, references, rounds=rounds, settle=SETTLE)
    precision_of = {**{o: p for o, (_, p) in segs.items()}, **{r: p[1] for r, p in peers.items()}}
    # an fp32 candidate against a bf16 peer compares different work, and a network alone is compared
    # with its own Segmenter only: not rows
    return [r for r in rows if not (precision_of[r.ours] == "fp32" and precision_of[r.reference] != "fp32")
            and (not r.reference.endswith("network alone") or r.reference.startswith(r.ours + ":"))]


def default_model(quick: bool) -> list[Row]:
    """The packaged CamVid model, 480x360 frames (CamVid's size in both modes)."""
    from ..models import load, pretrained

    model = load(pretrained.get().path).float().eval()
    return race("CPU engines: default model", model, (360, 480), 5 if quick else 21, "trained")


def lraspp(quick: bool) -> list[Row]:
    """LR-ASPP MobileNetV3-Large, 21 classes, random weights, 512x1024 (128x256 quick)."""
    from ..models import from_torchvision
    from .models import _lraspp, _size, _torchvision

    tv = _torchvision()
    if tv is None:
        return []
    return race("CPU engines: LR-ASPP MobileNetV3-Large", from_torchvision(_lraspp(tv)), _size(quick),
                3 if quick else 11, "random")
