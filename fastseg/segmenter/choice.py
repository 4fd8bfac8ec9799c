"""Which runtime runs the network: the one place where it is decided, and why.

`runtime="auto"` (the default) picks:

- On the CPU in fp32 (on CPUs with AMX, see the next rule), the fused torch model where Winograd
  serves the network's convolutions, ONNX Runtime otherwise. On the CPU the network is
  convolution-bound. Stride-1 dense 3x3 convolutions, dilated or not, run in the fused torch model
  as Winograd F(4x4) / F(6x6)
  (`fastseg.ops.winograd`: two to three times fewer multiplies), with each ResNet bottleneck's last
  1x1 convolution, residual add and ReLU as one oneDNN call writing in place. So torch runs a model
  with a dilated 3x3 convolution Winograd serves (DeepLabV3, FCN, DeepLabV3+ on ResNets: most of
  their multiplies are at stride 8 / 16 in those), or one where Winograd serves at least
  WINOGRAD_SHARE of the convolutions' multiply-adds (`winograd_share`, counted on one small frame:
  the default U-Net 0.73, U-Nets on ResNets 0.63-0.88, LR-ASPP and SegFormer 0). Measured on the
  default model (480x360 uint8 in, labels out, 2 threads, `fastseg bench --only cpu_engines_default`,
  against ONNX Runtime running the whole pipeline as one graph): the Segmenter on the torch runtime
  1.19x, on ONNX Runtime's network 1.03x (AMD EPYC, AVX2 only; benchmarks/results/
  cpu_engines_default.json); in full runs on the same CPU 1.10x against 1.08x, 1.10x against 0.98x
  and 1.00x against 1.05x, and 1.13x against 1.03x on an AVX-512 EPYC (the previous default model,
  the same network less its pooling branch). Everything else (depthwise and 1x1 convolutions,
  attention) runs faster in ONNX Runtime's convolutions (a blocked NCHWc layout, activations fused,
  weights packed once) than in torch's, eager in either layout or under Inductor; what ONNX Runtime
  does badly is the tail (a full-resolution Resize, then ArgMax over the materialised logits), so
  only the network runs there and fastseg's fused upsample + argmax runs after it. Without
  onnxruntime installed, or when channels_last=True asks for a torch layout, torch.
  On AMD EPYC CPUs (AVX2 only, and AVX-512 with BF16) OpenVINO in fp32 (runtime="openvino") ran
  between 0.91x and 1.13x ONNX Runtime's speed on the benchmark models (`cpu_engines_*` cases), and
  on the one where it was ahead, the default model, the torch runtime was further ahead (1.16x
  against 1.19x), so there it is not chosen.
- On a CPU with AMX (an Intel Xeon of the 4th generation or later, asked of the CPU at run time) in
  fp32, OpenVINO when it is installed, except for the dilated ResNets above (torch). OpenVINO's
  CPU plugin leads there (why, this rule does not claim): on an Intel Xeon with AMX (2 threads,
  Segmenter.predict on a uint8 frame, interleaved medians; `benchmarks/runtime_race.py`, its
  results in benchmarks/results/runtime_race.json; the range is over two runs) it ran the default
  model 1.47-1.48x and 1.14-1.21x as fast as the torch and ONNX Runtime runtimes (480x360), the
  ResNet-18 U-Net 1.10-1.14x / 1.21-1.33x (480x360), LR-ASPP 1.57-1.83x / 1.13-1.18x and
  SegFormer-B0 1.40-1.47x / 2.15-2.20x (1024x512), while DeepLabV3-ResNet50 ran 1.12-1.19x as fast
  in torch (Winograd on its dilated convolutions) as in OpenVINO.
  On Intel CPUs without AMX it is unmeasured, and the AMD rule holds there.
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
# fp32 on the CPU: torch where Winograd serves at least this share of the convolutions' multiply-adds
WINOGRAD_SHARE = 0.5
# the frame `winograd_share` counts on: small (counting is a forward pass at construction), and the
# shares of a convolutional network do not depend on the frame's size
SHARE_FRAME = (96, 128)


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
    from .quantized import runtime_form

    if runtime == "auto":
        runtime = "openvino" if openvino_runtime.available() else "onnxruntime"
    if runtime not in ("openvino", "onnxruntime"):
        raise ValueError(f"runtime: an int8 graph runs in 'openvino' or 'onnxruntime', not {runtime!r}")
    if channels_last:
        raise ValueError("channels_last: int8 graphs take NCHW input (the engine picks its own layout inside)")
    if runtime == "onnxruntime":
        return OnnxRuntime(None, spinning=ort_spinning, graph=runtime_form(graph.path))
    return openvino_runtime.OpenVinoRuntime(graph, "int8")


def _auto(model: nn.Module, device: torch.device, precision: str) -> str:
    from . import openvino_runtime
    from .precision import amx, native_bf16

    if device.type == "cpu" and precision == "bf16":
        return "openvino" if native_bf16() and openvino_runtime.available() else "torch"
    if device.type != "cpu" or precision != "fp32" or _winograd_backbone(model):
        return "torch"
    if amx() and openvino_runtime.available():
        return "openvino"
    if winograd_share(model) >= WINOGRAD_SHARE:
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnxruntime"


def _winograd_blocks(model: nn.Module) -> list[nn.Module]:
    """The conv + BN + activation blocks whose convolution Winograd serves: in a model as trained its
    ConvBNAct modules, in a fused one the FoldedConv / AtrousConv modules fusing turns them into (the
    blocks that run through fastseg's convolution op)."""
    from ..models.layers import ConvBNAct
    from ..models.rewrite import FoldedConv
    from ..ops import winograd

    def served(m: nn.Module) -> bool:
        c = m.conv
        return winograd.geometry_serves(c.kernel_size, c.stride, c.padding, c.dilation, c.groups, m.act_name,
                                        c.in_channels, c.out_channels)

    return [m for m in model.modules() if isinstance(m, (ConvBNAct, FoldedConv)) and served(m)]


def _winograd_backbone(model: nn.Module) -> bool:
    """True for a model with dilated dense 3x3 convolutions that Winograd serves (a dilated ResNet),
    whose multiplies are mostly in those convolutions."""
    return any(max(m.conv.dilation) > 1 for m in _winograd_blocks(model))


def winograd_share(model: nn.Module) -> float:
    """The share of the model's convolution multiply-adds that Winograd serves (`_winograd_blocks`),
    counted on one small frame; 0 without a forward pass when it serves none."""
    served = {id(m) for m in _winograd_blocks(model)}
    if not served:
        return 0.0
    from ..models.layers import ConvBNAct
    from ..models.rewrite import FoldedConv

    macs = {"all": 0, "served": 0}

    def count(module: nn.Module, inputs, output: torch.Tensor) -> None:
        c = module.conv if isinstance(module, (ConvBNAct, FoldedConv)) else module
        n = output.numel() * (c.in_channels // c.groups) * c.kernel_size[0] * c.kernel_size[1]
        macs["all"] += n
        macs["served"] += n if id(module) in served else 0

    blocks = [m for m in model.modules() if isinstance(m, (ConvBNAct, FoldedConv))]
    inside = {id(m.conv) for m in blocks}
    convs = blocks + [m for m in model.modules() if isinstance(m, nn.Conv2d) and id(m) not in inside]
    hooks = [m.register_forward_hook(count) for m in convs]
    modes = [(m, m.training) for m in model.modules()]
    param = next(model.parameters())
    try:
        model.eval()  # a model given in training mode keeps its batch-norm statistics
        with torch.inference_mode():
            model(torch.zeros((1, 3, *SHARE_FRAME), dtype=param.dtype, device=param.device))
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes:
            m.training = training
    return macs["served"] / macs["all"]
