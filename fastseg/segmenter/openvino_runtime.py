"""The OpenVINO runtime: the network's ONNX graph in OpenVINO's CPU plugin, fastseg's fused tail after it.

OpenVINO reads the same `forward_logits` graph as the "onnxruntime" runtime (exported once and
cached by `fastseg.segmenter.onnx_cache`) and compiles it for one input shape at a time (its CPU
plugin plans kernels and memory once per static shape, and a video loop has one frame size).
Compiled models are kept per shape, a few of them; compiling takes long enough that
`Segmenter.warmup` should pay it before a real-time loop starts. A compiled model holds its shape's
activation memory, so one for a larger frame than the loop's goes after IDLE_CALLS calls unused.

The precision it computes in is pinned (`INFERENCE_PRECISION_HINT`), never left to the plugin, which
would otherwise run bf16 by itself on CPUs with AVX512-BF16 or AMX: "f32" for fp32, "bf16" for bf16.
It also runs fastseg's int8 QDQ graphs (`fastseg quantize`), in the form made when they load
(`quantized.runtime_form`: activations uint8, at zero point 0 where they cannot be negative, since
OpenVINO misreads signed ones and runs unsigned ones at zero point 0 fastest). Their hint stays
"f32": the quantized convolutions run in int8, what lies between them in fp32 (bf16 there was no
faster on an Intel Xeon with AMX).

It also takes the uint8 RGB frame itself, [N,H,W,3] (`takes_uint8_hwc`): for those a second graph
per shape has OpenVINO's own preprocessing in front (`PrePostProcessor`: u8 NHWC in, converted,
mean subtracted and divided by std, transposed to NCHW), which its CPU plugin runs inside the
compiled model, in its precision and on its threads, reading a quarter of the bytes of a float
frame; fastseg's own uint8 -> float pass (one thread, 4 bytes written per value) then never runs.

Its threads are as many as torch's, one stream, the latency hint (one frame at a time). OpenVINO's
workers are TBB threads that sleep when a run ends, and fastseg's kernels around it run on threads
that end with each call (`kernel_threads`), so no pool spins against the other (ARCHITECTURE.md,
P4 (one thread budget)).
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
import tempfile
import threading

import torch
from torch import nn

from .. import _native
from .quantized import QuantizedGraph, runtime_form
from .runtimes import Runtime

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
KEEP_SHAPES = 4  # compiled models kept; a list input of several sizes needs one per size
# A compiled model holds its shape's activation memory (its stream's graph, not the infer request:
# a 1600x1600 frame of the default model keeps about 350 MiB), so one large frame in a video loop
# would keep its peak for good. A kept model larger than the shape being run (in input elements)
# goes once it has gone unused for this many calls; sizes that alternate keep theirs.
IDLE_CALLS = 8


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def read_onnx(core, graph: str | bytes):
    """An ONNX graph (a path, or its bytes) as an OpenVINO model."""
    if isinstance(graph, str):
        return core.read_model(graph)
    with tempfile.TemporaryDirectory() as folder:  # OpenVINO reads ONNX from a file
        path = os.path.join(folder, "graph.onnx")
        with open(path, "wb") as f:
            f.write(graph)
        return core.read_model(path)


class OpenVinoRuntime(Runtime):
    """`forward_logits` as ONNX in OpenVINO on the CPU: fp32 NCHW input (converted inside to the
    precision it runs in), or the uint8 RGB frames [N,H,W,3] (normalised inside), fp32 logits out.

    model: a fastseg model (its graph comes from the ONNX cache), precision "fp32" or "bf16"; or a
    `quantized.QuantizedGraph` (an int8 file of `fastseg quantize`), precision "int8"."""

    name = "openvino"
    takes_uint8_hwc = True

    def __init__(self, model: nn.Module, precision: str = "fp32"):
        import openvino as ov

        from . import onnx_cache

        if precision not in HINTS:
            raise ValueError(f"precision: the openvino runtime runs {tuple(HINTS)}, got {precision!r}")
        self.device, self.dtype, self.channels_last = torch.device("cpu"), torch.float32, False
        self.precision = precision
        self._threads = torch.get_num_threads()
        self._ov, self._core = ov, ov.Core()
        self._config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "INFERENCE_NUM_THREADS": self._threads,
                        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if isinstance(model, QuantizedGraph):
            if precision != "int8":
                raise ValueError(f"precision: {model.path} is an int8 graph, not {precision}")
            self._graph = read_onnx(self._core, runtime_form(model.path))
        else:
            self._graph = onnx_cache.load_logits_graph(model, lambda g: read_onnx(self._core, g))
        self._mean, self._std = tuple(model.mean), tuple(model.std)
        self._lock = threading.Lock()
        # (shape, uint8 frames?) -> (compiled model, idle infer requests), most recently used last
        self._compiled: dict[tuple, tuple] = {}
        self._calls = 0
        self._last_used: dict[tuple, int] = {}  # key -> the call that last used it

    def compiled(self, shape: tuple[int, ...], uint8_hwc: bool = False):
        """The compiled model and the pool of idle infer requests for one input shape: [N,3,H,W]
        normalised float, or with `uint8_hwc` [N,H,W,3] uint8 RGB frames."""
        key = (tuple(shape), uint8_hwc)
        with self._lock:
            self._calls += 1
            self._forget_idle_larger_than(key)
            entry = self._compiled.pop(key, None)
            if entry is None:
                graph = self._graph.clone()
                n, *rest = shape
                nchw = [n, rest[2], rest[0], rest[1]] if uint8_hwc else [n, *rest]
                graph.reshape({graph.inputs[0].any_name: nchw})
                if uint8_hwc:
                    graph = self._normalising(graph)
                entry = (self._core.compile_model(graph, "CPU", self._config), queue.SimpleQueue())
                if len(self._compiled) >= KEEP_SHAPES:
                    self._last_used.pop(oldest := next(iter(self._compiled)))
                    self._compiled.pop(oldest)
            self._compiled[key] = entry  # most recently used last
            self._last_used[key] = self._calls
        return entry

    def _forget_idle_larger_than(self, key: tuple) -> None:
        """Drop the compiled models of larger inputs than `key`'s left unused for IDLE_CALLS calls
        (a call still running on one keeps it alive until it returns)."""
        size = math.prod(key[0])
        for other in [k for k in self._compiled if k != key]:
            if math.prod(other[0]) > size and self._calls - self._last_used[other] > IDLE_CALLS:
                del self._compiled[other], self._last_used[other]

    def _normalising(self, graph):
        """`graph` with uint8 NHWC RGB frames in: (x - 255 mean) / (255 std), NCHW, inside OpenVINO."""
        import openvino as ov
        from openvino.preprocess import PrePostProcessor

        steps = PrePostProcessor(graph)
        steps.input(0).tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        steps.input(0).model().set_layout(ov.Layout("NCHW"))
        steps.input(0).preprocess().convert_element_type(ov.Type.f32) \
            .mean([255.0 * m for m in self._mean]).scale([255.0 * s for s in self._std])
        return steps.build()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of normalised float [N,3,H,W] or of uint8 RGB frames [N,H,W,3]."""
        uint8_hwc = x.dtype == torch.uint8
        if uint8_hwc and (x.dim() != 4 or x.shape[3] != 3):
            raise ValueError(f"x: uint8 frames must be [N,H,W,3], got {tuple(x.shape)}")
        x = x.contiguous()  # a no-op for the Segmenter's own buffers and for whole numpy frames
        model, idle = self.compiled(tuple(x.shape), uint8_hwc)
        try:
            request = idle.get_nowait()
        except queue.Empty:  # one request per concurrent call: a request holds its own buffers
            request = model.create_infer_request()
        try:
            # The logits are written into a tensor of the caller's, set as the request's output: the
            # request's own buffer is reused by its next run, and copying out of it (and the copy
            # `infer` makes unless its outputs are shared) would cost a pass over the logits each.
            logits = torch.empty(tuple(model.outputs[0].get_shape()), dtype=torch.float32)
            request.set_output_tensor(0, self._ov.Tensor(logits.numpy(), shared_memory=True))
            request.infer({0: x.numpy()}, share_inputs=True, share_outputs=True)
            return logits
        finally:
            idle.put(request)

    def precision_in_use(self, shape: tuple[int, ...], uint8_hwc: bool = False) -> str:
        """The precision OpenVINO reports for the model compiled for `shape` ("f32", "bf16", ...)."""
        return self.compiled(shape, uint8_hwc)[0].get_property("INFERENCE_PRECISION_HINT").to_string()

    @property
    def threads(self) -> int:
        return self._threads

    def kernel_threads(self) -> contextlib.AbstractContextManager:
        return _native.own_threads()

    def __repr__(self):
        return f"OpenVinoRuntime(precision={self.precision}, threads={self.threads})"
