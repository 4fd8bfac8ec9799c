"""The OpenVINO runtime: the network's ONNX graph in OpenVINO's CPU plugin, fastseg's fused tail after it.

OpenVINO reads the same `forward_logits` graph as the "onnxruntime" runtime (exported once and
cached by `fastseg.segmenter.onnx_cache`) and compiles it for one input shape at a time (its CPU
plugin plans kernels and memory once per static shape, and a video loop has one frame size).
Compiled models are kept per shape, a few of them; compiling takes long enough that
`Segmenter.warmup` should pay it before a real-time loop starts.

The precision it computes in is pinned (`INFERENCE_PRECISION_HINT`), never left to the plugin, which
would otherwise run bf16 by itself on CPUs with AVX512-BF16 or AMX: "f32" for fp32, "bf16" for bf16.
It also runs fastseg's int8 QDQ graphs (`fastseg quantize`), with their activations rewritten from
int8 around 0 to uint8 around 128 (`quantized.unsigned_activations`: the same values exactly),
because OpenVINO misreads signed activations. Their hint stays "f32": the quantized convolutions run
in int8, what lies between them in fp32.

Its threads are as many as torch's, one stream, the latency hint (one frame at a time). OpenVINO's
workers are TBB threads that sleep when a run ends, and fastseg's kernels around it run on threads
that end with each call (`kernel_threads`), so no pool spins against the other (ARCHITECTURE.md,
P4 (one thread budget)).
"""
from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading

import torch
from torch import nn

from .. import _native
from .quantized import QuantizedGraph, unsigned_activations
from .runtimes import Runtime

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
KEEP_SHAPES = 4  # compiled models kept; a list input of several sizes needs one per size


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
    precision it runs in), fp32 logits out.

    model: a fastseg model (its graph comes from the ONNX cache), precision "fp32" or "bf16"; or a
    `quantized.QuantizedGraph` (an int8 file of `fastseg quantize`), precision "int8"."""

    name = "openvino"

    def __init__(self, model: nn.Module, precision: str = "fp32"):
        import openvino as ov

        from . import onnx_cache

        if precision not in HINTS:
            raise ValueError(f"precision: the openvino runtime runs {tuple(HINTS)}, got {precision!r}")
        self.device, self.dtype, self.channels_last = torch.device("cpu"), torch.float32, False
        self.precision = precision
        self._threads = torch.get_num_threads()
        self._core = ov.Core()
        self._config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "INFERENCE_NUM_THREADS": self._threads,
                        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if isinstance(model, QuantizedGraph):
            if precision != "int8":
                raise ValueError(f"precision: {model.path} is an int8 graph, not {precision}")
            self._graph = read_onnx(self._core, unsigned_activations(model.path))
        else:
            self._graph = onnx_cache.load_logits_graph(model, lambda g: read_onnx(self._core, g))
        self._lock = threading.Lock()
        self._compiled: dict[tuple[int, ...], tuple] = {}  # shape -> (compiled model, idle infer requests)

    def compiled(self, shape: tuple[int, ...]):
        """The compiled model and the pool of idle infer requests for one input shape."""
        with self._lock:
            entry = self._compiled.pop(shape, None)
            if entry is None:
                graph = self._graph.clone()
                graph.reshape({graph.inputs[0].any_name: list(shape)})
                entry = (self._core.compile_model(graph, "CPU", self._config), queue.SimpleQueue())
                if len(self._compiled) >= KEEP_SHAPES:
                    self._compiled.pop(next(iter(self._compiled)))
            self._compiled[shape] = entry  # most recently used last
        return entry

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()  # a no-op for the Segmenter's own buffers, which are written NCHW
        model, idle = self.compiled(tuple(x.shape))
        try:
            request = idle.get_nowait()
        except queue.Empty:  # one request per concurrent call: a request holds its own buffers
            request = model.create_infer_request()
        try:
            request.infer({0: x.numpy()}, share_inputs=True)
            # a copy: the request's output buffer is reused by its next run
            return torch.from_numpy(request.get_output_tensor(0).data.copy())
        finally:
            idle.put(request)

    def precision_in_use(self, shape: tuple[int, ...]) -> str:
        """The precision OpenVINO reports for the model compiled for `shape` ("f32", "bf16", ...)."""
        return self.compiled(shape)[0].get_property("INFERENCE_PRECISION_HINT").to_string()

    @property
    def threads(self) -> int:
        return self._threads

    def kernel_threads(self) -> contextlib.AbstractContextManager:
        return _native.own_threads()

    def __repr__(self):
        return f"OpenVinoRuntime(precision={self.precision}, threads={self.threads})"
