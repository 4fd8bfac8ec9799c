"""Runtimes: what runs the network, normalised batch in, low-resolution logits out.

A runtime owns everything about that stage: the device, the dtype and memory layout of the input it
takes (the Segmenter's preprocessing writes straight into that form), the threads it runs on and how
fastseg's own kernels must run around it, and `__call__(x) -> logits`. A runtime holds no per-call
state, so one runtime serves any number of threads at once. Which runtime a Segmenter gets is
decided in `fastseg.segmenter.choice`.
"""
from __future__ import annotations

import contextlib
import time

import torch
from torch import nn

from .. import _native


class Runtime:
    """The network stage. Subclasses set the attributes and implement `__call__`."""

    name: str = ""
    device: torch.device
    dtype: torch.dtype = torch.float32   # of the normalised input it takes
    channels_last: bool = False          # the layout of that input
    # also takes the uint8 RGB frames [N,H,W,3] themselves and normalises them inside (the network
    # engine's own preprocessing), so the Segmenter's preprocessing pass can be skipped
    takes_uint8_hwc: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def threads(self) -> int:
        """The CPU threads the network runs on (torch's, unless the runtime has a pool of its own)."""
        return torch.get_num_threads()

    def kernel_threads(self) -> contextlib.AbstractContextManager:
        """Entered around each call of the pipeline: how fastseg's kernels (preprocessing, fused tail)
        run next to this runtime. By default on torch's threads."""
        return contextlib.nullcontext()

    def sync(self) -> float:
        """Wait for the work queued on the device; the time after it (for per-stage timings)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def __repr__(self):
        return (f"{type(self).__name__}(device={self.device}, dtype={self.dtype}, "
                f"channels_last={self.channels_last}, threads={self.threads})")


class TorchRuntime(Runtime):
    """The fused eager model (`fastseg.models.fuse`) on torch's threads, in the model's dtype and layout."""

    name = "torch"

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool):
        self.device, self.dtype, self.channels_last = device, dtype, bool(channels_last)
        model = model.to(device=device, dtype=dtype)
        if self.channels_last or device.type == "cuda":
            # On CUDA the weights are channels_last whatever the input layout: cuDNN's tensor-core
            # kernels and fastseg's Triton convolutions read NHWC, and channels_last weights make
            # every convolution return channels_last activations, so no layer converts its input
            # again on each frame (the Triton kernels would otherwise copy NCHW input per call).
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._forward = self._build(model)

    def _build(self, model: nn.Module):
        return model.forward_logits

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)


class InductorRuntime(TorchRuntime):
    """The same model under torch.compile with frozen weights: parameters become constants, so
    Inductor folds and pre-packs them (oneDNN weight layouts on the CPU) instead of reading them as
    inputs on every call. It compiles once per input size (`Segmenter.warmup` does that up front)."""

    name = "inductor"

    def _build(self, model: nn.Module):
        return torch.compile(model.forward_logits, options={"freezing": True})


class OnnxRuntime(Runtime):
    """`forward_logits` exported to ONNX (dynamic batch and size, cached on disk by
    `fastseg.segmenter.onnx_cache`) and run by ONNX Runtime on the CPU, fp32, NCHW input (it picks
    its own blocked layout inside).

    ONNX Runtime's intra-op workers (as many as torch's threads) spin between the operators of one
    run when `spinning` is on, its own default, and stop when the run returns; meanwhile fastseg's
    kernels run on threads that end with each call (`kernel_threads`), because torch's OpenMP
    workers would otherwise spin after each region against ONNX Runtime's next run.
    """

    name = "onnxruntime"

    def __init__(self, model: nn.Module | None, spinning: bool = True, *, graph: str | bytes | None = None):
        import onnxruntime as ort

        from . import onnx_cache

        self.device, self.dtype, self.channels_last = torch.device("cpu"), torch.float32, False
        self.spinning = bool(spinning)
        self._threads = torch.get_num_threads()
        options = self.session_options(self._threads, self.spinning)

        def session(g):
            return ort.InferenceSession(g, options, providers=["CPUExecutionProvider"])

        # graph: an ONNX graph of the same form, a file or its bytes (an int8 graph of fastseg.quantize)
        self.session = session(graph) if graph is not None else onnx_cache.load_logits_graph(model, session)

    @staticmethod
    def session_options(threads: int, spinning: bool):
        """ONNX Runtime's session options for this runtime.

        No memory arena: with it, ONNX Runtime keeps the peak of its largest frame for the rest of the
        process (gigabytes after one multi-megapixel frame); without it, memory goes back after each
        run at no measurable cost on video-sized frames (the onnxruntime_arena benchmark case)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = False
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        return options

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()  # a no-op for the Segmenter's own buffers, which are written NCHW
        return torch.from_numpy(self.session.run(None, {"image": x.numpy()})[0])

    @property
    def threads(self) -> int:
        return self._threads

    def kernel_threads(self) -> contextlib.AbstractContextManager:
        return _native.own_threads()
