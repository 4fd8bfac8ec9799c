"""fastseg.metrics.confusion_matrix: every backend against the reference, and its bad-input errors.

The Triton kernel runs under TRITON_INTERPRET=1 here (set by conftest.py), so its shapes stay small.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastseg
from fastseg import _native
from fastseg.ops.confusion_matrix import confusion_matrix, reference

FAST = ["native", "triton"]
DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]


def labels(shape, num_classes, dtype, ignore_index=None, ignore_frac=0.0, seed=0):
    """Random labels in [0, C) of `dtype`, with a fraction of pixels set to ignore_index."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, num_classes, shape, generator=g)
    if ignore_index is not None and ignore_frac > 0:
        x[torch.rand(shape, generator=g) < ignore_frac] = ignore_index
    return x.to(dtype)


def blocky(shape, num_classes, dtype, seed=0):
    """Labels in long runs of one class, like real segmentation maps (stresses repeated bins)."""
    g = torch.Generator().manual_seed(seed)
    *lead, h, w = (1, *shape) if len(shape) == 1 else shape
    lo = torch.randint(0, num_classes, (*lead, -(-h // 8), -(-w // 16)), generator=g)
    runs = lo.repeat_interleave(8, -2).repeat_interleave(16, -1)[..., :h, :w]
    return runs.reshape(shape).contiguous().to(dtype)


def check(pred, target, C, ignore_index=255, backend="native"):
    got = confusion_matrix(pred, target, C, ignore_index, backend=backend)
    p, _ = fastseg._arrays.to_torch(pred, "pred")
    t, _ = fastseg._arrays.to_torch(target, "target")
    want = reference(p, t, C, ignore_index)
    got_t = torch.as_tensor(got)
    assert got_t.dtype == torch.int64 and got_t.shape == (C, C)
    assert torch.equal(got_t, want), (got_t - want).abs().max()
    return got


def test_reference_is_a_plain_count():
    # The specification checked against a literal loop over pixels.
    t = torch.tensor([[0, 1, 2, 255], [2, 2, 1, 0]])
    p = torch.tensor([[0, 2, 2, 1], [1, 2, 1, 0]])
    want = torch.zeros(3, 3, dtype=torch.int64)
    for ti, pi in zip(t.flatten().tolist(), p.flatten().tolist()):
        if ti != 255:
            want[ti, pi] += 1
    assert torch.equal(reference(p, t, 3, 255), want)
    assert torch.equal(fastseg.metrics.confusion_matrix(p, t, 3), want)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (1, 1, 1), (2, 37, 53), (4, 1, 17, 129)])
def test_matches_reference_over_shapes_and_dtypes(backend, dtype, shape):
    C = 19
    ignore = 255 if dtype in (torch.uint8, torch.int16, torch.int32, torch.int64) else -1
    t = labels(shape, C, dtype, ignore, 0.1, seed=1)
    p = labels(shape, C, dtype, seed=2)
    check(p, t, C, ignore, backend)
    t_all = labels(shape, C, dtype, seed=4)  # no ignored pixel present / ignoring switched off
    check(p, t_all, C, ignore, backend)
    check(p, t_all, C, None, backend)
    tb = blocky(shape, C, dtype, seed=3)
    check(tb, tb, C, ignore, backend)  # every pixel in one diagonal bin per run


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("C", [1, 2, 3, 19, 64, 65, 100, 150, 255, 256])
def test_matches_reference_over_class_counts(backend, C):
    shape = (2, 41, 67)
    p = labels(shape, C, torch.uint8, seed=C)
    if C <= 255:  # uint8 holds 255 only as a class when C = 256
        t = labels(shape, C, torch.uint8, 255, 0.05, seed=C + 1)
        check(p, t, C, 255, backend)
    t = labels(shape, C, torch.uint8, seed=C + 2)
    check(p, t, C, None, backend)
    check(p.long(), t.int(), C, None, backend)


@pytest.mark.parametrize("backend", FAST)
def test_ignore_index_inside_the_class_range(backend):
    # ignore_index 0 drops class-0 ground truth but predictions of 0 still count elsewhere.
    p = labels((3, 33, 31), 5, torch.int64, seed=5)
    t = labels((3, 33, 31), 5, torch.int64, seed=6)
    got = check(p, t, 5, 0, backend)
    assert got[0].sum() == 0 and got[:, 0].sum() > 0


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("pdt,tdt", [(torch.uint8, torch.int64), (torch.int64, torch.uint8),
                                     (torch.int16, torch.int32), (torch.int8, torch.uint8)])
def test_mixed_dtypes(backend, pdt, tdt):
    C = 11
    p = labels((2, 29, 43), C, pdt, seed=7)
    t = labels((2, 29, 43), C, tdt, 100, 0.2, seed=8)
    check(p, t, C, 100, backend)


@pytest.mark.parametrize("backend", FAST)
def test_unsigned_wide_dtypes(backend):
    if not hasattr(torch, "uint16"):
        pytest.skip("this torch has no uint16/uint32")
    p = labels((3, 20, 21), 7, torch.int64, seed=9)
    t = labels((3, 20, 21), 7, torch.int64, 255, 0.1, seed=10)
    check(p.to(torch.uint16), t.to(torch.uint32), 7, 255, backend)
    check(p.numpy().astype(np.uint16), t.numpy().astype(np.uint64), 7, 255, backend)


@pytest.mark.parametrize("backend", FAST)
def test_non_contiguous_inputs(backend):
    C = 13
    base_p = labels((4, 40, 2, 50), C, torch.uint8, seed=11)
    base_t = labels((4, 40, 2, 50), C, torch.uint8, 255, 0.1, seed=12)
    views = [
        lambda x: x[..., 0, :],                      # strided slice
        lambda x: x[:, ::3, 1, ::2],                 # steps in two dims
        lambda x: x[:, :, 0, :].transpose(1, 2),     # transposed
        lambda x: x.permute(3, 0, 2, 1),             # channels-last-like permutation
        lambda x: x[:1, :5, 0, :7].expand(3, 5, 7),  # stride 0 (broadcast)
    ]
    for view in views:
        check(view(base_p), view(base_t), C, 255, backend)
    # pred and target with different layouts
    check(base_p[:, :, 0, :].contiguous(), base_t[:, :, 1, :], C, 255, backend)
    check(base_p.transpose(0, 3).contiguous().transpose(0, 3), base_t, C, 255, backend)


@pytest.mark.parametrize("backend", FAST)
def test_numpy_read_only_in_numpy_out(backend):
    p = labels((2, 33, 35), 9, torch.uint8, seed=13).numpy()
    t = labels((2, 33, 35), 9, torch.uint8, 255, 0.1, seed=14).numpy()
    p.setflags(write=False)
    t.setflags(write=False)
    got = check(p, t, 9, 255, backend)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    got = check(p[:, ::2, 1:].T, t[:, ::2, 1:].T, 9, 255, backend)  # read-only and strided
    assert isinstance(got, np.ndarray)


def test_native_large_multithreaded_and_folded():
    # Large enough for several threads and tasks; folding the 32-bit counters many times
    # (fold_every, a test hook) must not change the counts.
    C = 19
    p = blocky((3, 501, 1003), C, torch.uint8, seed=15)
    t = labels((3, 501, 1003), C, torch.uint8, 255, 0.05, seed=16)
    want = reference(p, t, C, 255)
    torch_threads = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert torch.equal(confusion_matrix(p, t, C, 255, backend="native"), want)
    finally:
        torch.set_num_threads(torch_threads)
    # Many short rows (inner dim of 2 that cannot merge with the next): tasks batch whole rows.
    ps = labels((600_001, 3), C, torch.uint8, seed=21)[:, :2]
    ts = labels((600_001, 3), C, torch.uint8, 255, 0.05, seed=22)[:, :2]
    assert torch.equal(confusion_matrix(ps, ts, C, 255, backend="native"), reference(ps, ts, C, 255))
    for fold_every in (1, 1000, 70000):
        out = torch.zeros(C, C, dtype=torch.int64)
        flags = _native.ext().confusion_matrix(_native.buf(p), _native.buf(t), C, True, 255, _native.buf(out), 2,
                                               fold_every)
        assert tuple(flags) == (False, False)
        assert torch.equal(out, want)


def test_auto_picks_native_on_cpu():
    p = labels((5, 9), 4, torch.int32, seed=17)
    t = labels((5, 9), 4, torch.int32, seed=18)
    assert torch.equal(confusion_matrix(p, t, 4, backend="auto"), reference(p, t, 4))


@pytest.mark.interpreter  # the Triton kernel on CPU tensors, with the block size the GPU runs
@pytest.mark.parametrize("C", [2, 3, 19, 64, 65, 150, 255, 256])
@pytest.mark.parametrize("shape", [(4095,), (4096,), (4097,), (3, 37, 111), (2, 64, 128), (5, 1, 2049)])
def test_triton_one_pass_equals_bincount_over_shapes_and_classes(C, shape):
    from fastseg.ops import _launch
    from fastseg.ops.confusion_matrix import triton_kernel

    with _launch.gpu_tiles():
        dtype = torch.uint8 if C <= 255 else torch.int16
        ignore = 255 if C <= 255 else 300
        t = labels(shape, C, dtype, ignore, 0.1, seed=C)
        p = blocky(shape, C, dtype, seed=C + 1) if len(shape) > 1 else labels(shape, C, dtype, seed=C + 1)
        for ig in (ignore, None):
            tt = t if ig is not None else labels(shape, C, dtype, seed=C + 2)
            got, flags = triton_kernel.confusion_matrix(p, tt, C, ig)
            want = torch.bincount((tt.reshape(-1).long() * C + p.reshape(-1).long())[
                tt.reshape(-1).long() != (ig if ig is not None else -1)], minlength=C * C).reshape(C, C)
            assert torch.equal(got, want)
            assert flags.tolist() == [0, 0]


def test_triton_counter_copies_are_few_and_small():
    from fastseg.ops.confusion_matrix.triton_kernel import COPIES_BYTES, MAX_COPIES, SPARE, copies_for

    assert copies_for(19) == MAX_COPIES and copies_for(10_000) == 1
    for C in (1, 2, 19, 150, 256, 700, 10_000):
        k = copies_for(C)
        assert 1 <= k <= MAX_COPIES and k & (k - 1) == 0
        assert k == 1 or k * (C * C + 2 + SPARE) * 8 <= COPIES_BYTES


@pytest.mark.interpreter
def test_triton_flags_say_which_input_and_count_nothing_of_a_bad_pixel():
    from fastseg.ops.confusion_matrix import triton_kernel

    C = 5
    t = labels((3, 50, 61), C, torch.int64, 255, 0.1, seed=30)
    p = labels((3, 50, 61), C, torch.int64, seed=31)
    good, flags = triton_kernel.confusion_matrix(p, t, C, 255)
    assert flags.tolist() == [0, 0]
    p2, t2 = p.clone(), t.clone()
    t2[t2 == 255] = 2  # all counted now; then spoil two pixels
    p2[0, 0, 0], t2[2, 49, 60] = 2**40, -1
    got, flags = triton_kernel.confusion_matrix(p2, t2, C, 255)
    assert flags.tolist() == [1, 1]
    keep = torch.ones(t2.numel(), dtype=torch.bool)
    keep[0] = keep[-1] = False
    want = torch.bincount(t2.reshape(-1)[keep] * C + p2.reshape(-1)[keep], minlength=C * C).reshape(C, C)
    assert torch.equal(got, want)
    p3 = p.clone()
    p3[t == 255] = 77  # bad predictions at ignored pixels are not checked
    assert triton_kernel.confusion_matrix(p3, t, C, 255)[1].tolist() == [0, 0]


# ---- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", *FAST])
@pytest.mark.parametrize("dtype", DTYPES)
def test_out_of_range_values_raise_naming_argument_and_value(backend, dtype):
    C = 10
    t = labels((2, 30, 30), C, dtype, 100, 0.1, seed=19)
    t[1, 7, 3] = 3  # a counted pixel
    p = labels((2, 30, 30), C, dtype, seed=20)
    bad = p.clone()
    bad[1, 7, 3] = 12
    with pytest.raises(ValueError, match=r"pred holds the value 12.*num_classes=10"):
        confusion_matrix(bad, t, C, 100, backend=backend)
    bad = t.clone()
    bad[0, 29, 29] = 10
    with pytest.raises(ValueError, match=r"target holds the value 10.*ignore_index=100"):
        confusion_matrix(p, bad, C, 100, backend=backend)
    if dtype != torch.uint8:
        bad = t.clone()
        bad[1, 0, 0] = -3
        with pytest.raises(ValueError, match=r"target holds the value -3"):
            confusion_matrix(p, bad, C, 100, backend=backend)
    # ignore_index None: the ignore value is just another out-of-range label
    with pytest.raises(ValueError, match=r"target holds the value 100"):
        confusion_matrix(p, t, C, None, backend=backend)
    # a bad prediction where the target is ignored is skipped with the pixel
    t2, p2 = t.clone(), p.clone()
    t2[0, 0, 0], p2[0, 0, 0] = 100, 77
    check(p2, t2, C, 100, backend)


@pytest.mark.interpreter  # runs the Triton kernel on CPU tensors
def test_wide_values_do_not_wrap_into_range():
    # 2**32 + 3 would read as 3 if narrowed to 32 bits.
    p = torch.zeros(4, 6, dtype=torch.int64)
    t = torch.zeros(4, 6, dtype=torch.int64)
    p[2, 2] = 2**32 + 3
    for backend in ["reference", *FAST]:
        with pytest.raises(ValueError, match=str(2**32 + 3)):
            confusion_matrix(p, t, 5, backend=backend)


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_bad_arguments(backend):
    p = torch.zeros(3, 4, dtype=torch.uint8)
    t = torch.zeros(3, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        confusion_matrix(p, t, 0, backend=backend)
    with pytest.raises(TypeError, match="num_classes must be an int"):
        confusion_matrix(p, t, 3.0, backend=backend)
    with pytest.raises(TypeError, match="ignore_index must be an int or None"):
        confusion_matrix(p, t, 3, ignore_index=2.5, backend=backend)
    with pytest.raises(ValueError, match="ignore_index must fit in int64"):
        confusion_matrix(p, t, 3, ignore_index=2**64, backend=backend)
    # numpy integers are ints
    assert torch.equal(confusion_matrix(p, t, np.int64(3), np.uint8(255), backend=backend),
                       confusion_matrix(p, t, 3, 255, backend="reference"))
    with pytest.raises(ValueError, match=r"shapes differ: \(3, 4\) vs \(4, 3\)"):
        confusion_matrix(p, t.T.contiguous(), 3, backend=backend)
    with pytest.raises(ValueError, match="empty"):
        confusion_matrix(p[:0], t[:0], 3, backend=backend)
    for bad_dtype in (torch.bool, torch.float32, torch.float16):
        with pytest.raises(TypeError, match=f"pred must hold integer labels.*{bad_dtype}"):
            confusion_matrix(p.to(bad_dtype), t, 3, backend=backend)
        with pytest.raises(TypeError, match=f"target must hold integer labels.*{bad_dtype}"):
            confusion_matrix(p, t.to(bad_dtype), 3, backend=backend)
    with pytest.raises(TypeError, match="pred: expected a torch.Tensor"):
        confusion_matrix([[0, 1]], t, 3, backend=backend)
    with pytest.raises(TypeError, match="target: expected a torch.Tensor"):
        confusion_matrix(p, "labels", 3, backend=backend)


def test_bad_backend():
    p = torch.zeros(3, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="backend must be one of"):
        confusion_matrix(p, p, 3, backend="cuda")


# ---- the Triton kernel compiles for real GPUs -----------------------------------------------

COMPILE_SCRIPT = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastseg.ops.confusion_matrix.triton_kernel import _confusion_kernel, BLOCK, NUM_WARPS, SPARE

for arch in (80, 87, 90):
    for ptr, tail in (("*u8", False), ("*i64", True), ("*i16", False)):
        sig = {"pred_ptr": ptr, "target_ptr": ptr, "out_ptr": "*i64", "n": "i64", "C": "i32", "ignore_index": "i64",
               "plane": "i32", "copies": "i32",
               "HAS_IGNORE": "constexpr", "TAIL": "constexpr", "BLOCK": "constexpr", "SPARE": "constexpr"}
        consts = {"HAS_IGNORE": True, "TAIL": tail, "BLOCK": BLOCK, "SPARE": SPARE}
        kernel = triton.compile(ASTSource(_confusion_kernel, sig, constexprs=consts),
                                target=GPUTarget("cuda", arch, 32), options={"num_warps": NUM_WARPS})
        assert kernel.asm["cubin"], (arch, ptr)
        ptx = kernel.asm["ptx"]
        assert "atom.global.gpu.relaxed.add.u64" in ptx, ptx[-2000:]
        assert not any(word in ptx for word in ("acq_rel", "acquire", "release", "membar", "fence"))
        print(f"sm_{arch} {ptr}: {len(kernel.asm['cubin'])} bytes of cubin")
"""


def test_triton_kernel_compiles_for_sm80_sm87_sm90_with_relaxed_atomics():
    # The interpreter never lowers the kernel; compile it to cubin (no GPU needed, Triton bundles
    # ptxas) in a fresh process where TRITON_INTERPRET is off, and read its PTX: relaxed atomics, no
    # fence.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("bytes of cubin") == 9, done.stdout
