"""What runtime="auto" picks in fp32 on the CPU these tests run on (fastseg/segmenter/choice.py): on a
CPU with AMX with OpenVINO installed, OpenVINO for every model but the dilated ResNets; elsewhere the
rule measured on AMD CPUs, which a test names (torch or onnxruntime by the model)."""
from __future__ import annotations

from fastseg.segmenter import openvino_runtime, precision


def fp32_auto(elsewhere: str) -> str:
    """The auto fp32 runtime of a model that is not a dilated ResNet, given the one it gets without AMX."""
    return "openvino" if precision.amx() and openvino_runtime.available() else elsewhere
