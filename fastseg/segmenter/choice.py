"""Which runtime runs the network: the one place where it is decided, and why.

`runtime="auto"` (the default) picks:

- On the CPU in fp32, ONNX Runtime, except for dilated ResNets (DeepLabV3, FCN, DeepLabV3+ on
  ResNets), which run in the fused torch model. On the CPU the network is convolution-bound. ONNX
  Runtime's convolutions (a blocked NCHWc layout, activations fused into the convolution, weights
  packed once) beat what torch offers for the same fused model, eager in either layout or under
  Inductor with frozen weights, on the machines fastseg is measured on (`fastseg bench`). What ONNX
  Runtime does badly is the tail (a full-resolution Resize, then ArgMax over the materialised
  logits), so only the network runs there and fastseg's fused upsample + argmax runs after it.
  Dilated ResNets are the exception because most of their multiplies are in stride-1 3x3
  convolutions at stride 8 / 16, which the fused torch model runs as Winograd F(4x4) / F(6x6)
  (`fastseg.ops.winograd`: two to three times fewer multiplies), with each bottleneck's last 1x1
  convolution, residual add and ReLU as one oneDNN call writing in place; there torch wins.
  Without onnxruntime installed, or when channels_last=True asks for a torch layout, torch.
  OpenVINO in fp32 (runtime="openvino") is not chosen: on the same graph it ran between 0.91x and
  1.04x ONNX Runtime's speed on the benchmark models (`cpu_engines_*` cases), a wash at best.
- On the CPU in bf16, OpenVINO (`openvino_runtime.py`) when it is installed and the CPU has native
  bf16 (AVX512-BF16 or AMX, asked of the CPU at run time): its bf16 convolutions beat torch's oneDNN
  bf16 path for these models (`fastseg bench --only cpu_engines_default,cpu_engines_lraspp`), and its
  fp32 logits keep more labels equal to fp32 than torch's bf16 logits do. Otherwise torch.
- An int8 graph (`fastseg quantize`, precision="int8"): OpenVINO when installed, whose int8
  convolutions beat ONNX Runtime's on the same graph and both engines' own INT8 pipelines
  (`fastseg bench --only int8_camvid`), else ONNX Runtime.
- On a GPU, or in fp16, torch: the Triton kernels and the reduced-precision kernels live there.

A new runtime (a CUDA-stream one, a quantized one, another engine for reduced precision) is a
`fastseg.segmenter.runtimes.Runtime` subclass, named in RUNTIMES below and in the rule above.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import _torch_compat
from .runtimes import InductorRuntime, OnnxRuntime, Runtime, TorchRuntime

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
RUNTIMES = ("auto", "torch", "inductor", "onnxruntime", "openvino")


def check_precision(precision: str, device: torch.device, allow_emulated: bool,
                    how_to_allow: str = "allow_emulated_precision=True") -> str:
    """`precision` when this device runs it natively (or emulation is allowed); otherwise ValueError:
    emulated reduced precision is far slower than fp32, never what a user wants by accident.
    `how_to_allow`: what the message tells the caller to pass (a command line names its option)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {tuple(PRECISIONS)}, got {precision!r}")
    if precision == "fp32" or allow_emulated:
        return precision
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision: bf16 is not supported by {torch.cuda.get_device_name(device)}")
        return precision
    if device.type == "cpu":
        supported = (_torch_compat.mkldnn_bf16_supported() if precision == "bf16"
                     else _torch_compat.mkldnn_fp16_supported())
        if not supported:
            raise ValueError(f"precision: this CPU has no native {precision} convolutions (oneDNN reports "
                             f"none; they need AVX512-BF16 / AMX / AVX512-FP16), so {precision} would be "
                             f"emulated and slower than fp32. Use fp32, or {how_to_allow}.")
        return precision
    raise ValueError(f"precision: {precision} on {device.type} is not supported")


def choose_runtime(runtime: str, model: nn.Module, device: torch.device, precision: str, *,
                   channels_last: bool | None = None, ort_spinning: bool = True) -> Runtime:
    """Build the runtime named by `runtime` ("auto": by the rule above) for `model` (as trained or
    already fused: the torch runtimes fuse it, ONNX Runtime's graph is exported from its fused form
    only when the graph is not cached yet).
    channels_last: the torch runtimes' input layout (default: True; cuDNN's tensor-core kernels and
    oneDNN's blocked ones both read NHWC)."""
    from ..models import fuse
    from .quantized import QuantizedGraph

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime: expected one of {RUNTIMES}, got {runtime!r}")
    if isinstance(model, QuantizedGraph):
        return _int8(runtime, model, channels_last, ort_spinning)
    if runtime == "auto":
        runtime = "torch" if channels_last else _auto(model, device, precision)
    if runtime == "onnxruntime":
        if device.type != "cpu":
            raise ValueError("runtime: 'onnxruntime' is fastseg's CPU runtime; use 'torch' on CUDA")
        if precision != "fp32":
            raise ValueError(f"precision: runtime 'onnxruntime' runs fp32 only, got {precision}")
        if channels_last:
            raise ValueError("channels_last: ONNX Runtime takes NCHW input (it picks its own layout inside)")
        return OnnxRuntime(model, spinning=ort_spinning)
    if runtime == "openvino":
        return _openvino(model, device, precision, channels_last)
    layout = True if channels_last is None else bool(channels_last)
    kind = InductorRuntime if runtime == "inductor" else TorchRuntime
    return kind(fuse(model), device, PRECISIONS[precision], layout)


def _openvino(model: nn.Module, device: torch.device, precision: str, channels_last: bool | None) -> Runtime:
    from .openvino_runtime import HINTS, OpenVinoRuntime

    if device.type != "cpu":
        raise ValueError("runtime: 'openvino' is a CPU runtime; use 'torch' on CUDA")
    if precision not in HINTS:
        raise ValueError(f"precision: runtime 'openvino' runs {tuple(HINTS)}, got {precision}")
    if channels_last:
        raise ValueError("channels_last: OpenVINO takes NCHW input (it picks its own layout inside)")
    return OpenVinoRuntime(model, precision)


def _int8(runtime: str, graph, channels_last: bool | None, ort_spinning: bool) -> Runtime:
    """An int8 QDQ graph (`fastseg.quantize`): "auto" runs it in OpenVINO when installed (its int8
    convolutions are the fastest measured, `fastseg bench --only int8_camvid`), else ONNX Runtime."""
    from . import openvino_runtime

    if runtime == "auto":
        runtime = "openvino" if openvino_runtime.available() else "onnxruntime"
    if runtime not in ("openvino", "onnxruntime"):
        raise ValueError(f"runtime: an int8 graph runs in 'openvino' or 'onnxruntime', not {runtime!r}")
    if channels_last:
        raise ValueError("channels_last: int8 graphs take NCHW input (the engine picks its own layout inside)")
    if runtime == "onnxruntime":
        return OnnxRuntime(None, spinning=ort_spinning, graph=graph.path)
    return openvino_runtime.OpenVinoRuntime(graph, "int8")


def _auto(model: nn.Module, device: torch.device, precision: str) -> str:
    from . import openvino_runtime
    from .precision import native_bf16

    if device.type == "cpu" and precision == "bf16":
        return "openvino" if native_bf16() and openvino_runtime.available() else "torch"
    if device.type != "cpu" or precision != "fp32" or _winograd_backbone(model):
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnxruntime"


def _winograd_backbone(model: nn.Module) -> bool:
    """True for a model with dilated dense 3x3 convolutions that Winograd serves (a dilated ResNet),
    whose multiplies are mostly in those convolutions: in a fused model its AtrousConv modules, in
    one as trained the conv + BN + activation blocks that fusing turns into them."""
    from ..models.layers import ConvBNAct
    from ..models.rewrite import AtrousConv, is_atrous
    from ..ops import winograd

    def served(m: nn.Module) -> bool:
        if not (isinstance(m, AtrousConv) or (isinstance(m, ConvBNAct) and is_atrous(m.conv))):
            return False
        c = m.conv
        return winograd.geometry_serves(c.kernel_size, c.stride, c.padding, c.dilation, c.groups, m.act_name,
                                        c.in_channels, c.out_channels)

    return any(served(m) for m in model.modules())
