"""The CUDA confusion-matrix kernel as compiled (no GPU needed, nvcc is): relaxed atomics without
fences, a shared-memory table counted with 32-bit offsets for labels of at most 32 bits, one
kernel per label type of both maps and a generic one for mixed types."""
from __future__ import annotations

import re

import pytest
from _nvcc import ARCHS, compile_ptx, kernel_body


@pytest.mark.parametrize("arch", ARCHS)
def test_atomics_are_relaxed_and_nothing_is_fenced(arch):
    ptx = compile_ptx("cuda/confusion_matrix.cu", arch)
    atomics = re.findall(r"\b(?:atom|red)\.[\w.]+", ptx)
    assert atomics and all(".acq" not in a and ".rel" not in a and ".sc" not in a for a in atomics), set(atomics)
    assert "atom.shared.add.u32" in ptx  # the per-block table
    assert "membar" not in ptx and "fence" not in ptx


def test_one_count_kernel_per_label_type_shared_or_not_contiguous_or_not():
    ptx = compile_ptx("cuda/confusion_matrix.cu", 90)
    entries = re.findall(r"\.entry\s+(\S*count_kernel\S*)\s*\(", ptx)
    assert len(entries) == 6 * 2 * 2  # uint8, int8, int16, int32, int64, mixed
    # uint8 maps, shared table, contiguous: 32-bit offsets into shared memory, no 64-bit multiply
    body = kernel_body(ptx, "count_kernelIhLb1ELb1EE")
    loop = body[body.index("atom.shared.add.u32") - 1500:body.index("atom.shared.add.u32")]
    assert "mul.lo.s64" not in loop and "mul.wide.s32" not in loop
