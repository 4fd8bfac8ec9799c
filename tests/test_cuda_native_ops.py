"""The CUDA C++ kernels of fastseg._C (backend "native" on CUDA tensors, what runs where Triton is
missing) and the CUDA CRF, on a real GPU, against the CPU answers. Skipped, with the reason, on a
machine without one; their arithmetic is checked here too, on the CPU (test_upsample_argmax_cuda_math.py,
test_crf_cuda_ptx.py, test_crf_cuda_memory.py)."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from test_upsample_argmax import DTYPES, SHAPES, make_logits

import fastseg
from fastseg import _native
from fastseg._device_memory import TorchDeviceMemory
from fastseg.crf import DenseCRF

pytestmark = [
    pytest.mark.gpu,  # make gpu-check runs these: the CUDA C++ kernels on a real GPU
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine"),
    pytest.mark.skipif(not _native.has_cuda(), reason="fastseg._C was built without its CUDA kernels (no nvcc)"),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_upsample_argmax_on_cuda_equals_the_cpu_kernel(shape, dtype, layout, align_corners):
    x = make_logits(shape[:4], dtype, layout, seed=sum(shape))
    size = shape[4:]
    want, want_conf = fastseg.ops.upsample_argmax(x, size, align_corners=align_corners, return_confidence=True,
                                                  backend="native")
    got, conf = fastseg.ops.upsample_argmax(x.cuda(), size, align_corners=align_corners, return_confidence=True,
                                            backend="native")
    assert got.is_cuda and torch.equal(got.cpu(), want)  # same taps and lerps: same labels
    torch.testing.assert_close(conf.cpu(), want_conf, atol=2e-6, rtol=2e-6)


def test_upsample_argmax_beyond_the_grid_axis_limits():
    x = make_logits((1, 3, 16, 16), seed=2)
    size = (4100, 4200)  # 17.2 M output pixels: more than 65535 blocks of 256
    want = fastseg.ops.upsample_argmax(x, size, backend="native")
    got = fastseg.ops.upsample_argmax(x.cuda(), size, backend="native")
    assert torch.equal(got.cpu(), want)


def test_auto_without_triton_runs_the_cuda_kernels(monkeypatch):
    from fastseg.ops import _dispatch

    monkeypatch.setattr(_dispatch, "triton_available", lambda: False)
    x = make_logits((2, 5, 13, 17), seed=3).cuda()
    assert _dispatch.resolve(_dispatch.Op("upsample_argmax", native_cuda=True), "auto", x.device) == "native"
    got = fastseg.ops.upsample_argmax(x, (40, 30))
    assert torch.equal(got.cpu(), fastseg.ops.upsample_argmax(x.cpu(), (40, 30), backend="native"))


@pytest.mark.parametrize("C", [1, 19, 150, 300])  # 150: shared memory above 48 KB; 300: beyond shared memory
@pytest.mark.parametrize("dtypes", [(torch.uint8, torch.uint8), (torch.int8, torch.int8), (torch.int64, torch.int64),
                                    (torch.int64, torch.int16), (torch.int32, torch.int8)])
def test_confusion_matrix_on_cuda_equals_the_reference(C, dtypes):
    g = torch.Generator().manual_seed(C)
    hi = min(C, 127)
    pred = torch.randint(0, hi, (3, 97, 131), generator=g).to(dtypes[0])
    target = torch.randint(0, hi, (3, 97, 131), generator=g).to(dtypes[1])
    target[:, ::7] = 100 if C > 100 else C - 1  # an ignored value inside or at the range
    ignore = 100 if C > 100 else None
    got = fastseg.metrics.confusion_matrix(pred.cuda()[:, :, ::2], target.cuda()[:, :, ::2], C,
                                           ignore_index=ignore, backend="native")
    want = fastseg.metrics.confusion_matrix(pred[:, :, ::2], target[:, :, ::2], C, ignore_index=ignore,
                                            backend="reference")
    assert got.is_cuda and torch.equal(got.cpu(), want)
    for n in (pred.numel(), pred.numel() - 3):  # contiguous byte maps: four labels a load, then a tail
        p, t = pred.reshape(-1)[:n], target.reshape(-1)[:n]
        got = fastseg.metrics.confusion_matrix(p.cuda(), t.cuda(), C, ignore_index=ignore, backend="native")
        assert torch.equal(got.cpu(), fastseg.metrics.confusion_matrix(p, t, C, ignore, backend="reference"))


def test_confusion_matrix_on_cuda_raises_on_out_of_range_labels():
    pred = torch.zeros(5, 6, dtype=torch.uint8, device="cuda")
    target = torch.zeros(5, 6, dtype=torch.uint8, device="cuda")
    pred[2, 3] = 9
    with pytest.raises(ValueError, match="pred"):
        fastseg.metrics.confusion_matrix(pred, target, 4, backend="native")
    pred[2, 3] = 0
    target[1, 1] = 7
    with pytest.raises(ValueError, match="target"):
        fastseg.metrics.confusion_matrix(pred, target, 4, ignore_index=None, backend="native")


def _crf_inputs(seed=0, h=90, w=120, c=6):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[: h // 2] //= 3  # two regions the bilateral term can tell apart
    probs = rng.dirichlet(np.ones(c), size=(h, w)).transpose(2, 0, 1).astype(np.float32)
    return torch.from_numpy(img), torch.from_numpy(probs)


def test_crf_on_cuda_agrees_with_the_cpu():
    img, probs = _crf_inputs()
    crf = DenseCRF()
    want = crf(img, probs).argmax(0)
    first = crf(img.cuda(), probs.cuda()).argmax(0).cpu()
    second = crf(img.cuda(), probs.cuda()).argmax(0).cpu()
    assert (first == want).float().mean() >= 0.995
    assert (first == second).float().mean() >= 0.999  # float atomics reorder sums, nothing else moves


def test_crf_on_cuda_takes_its_memory_from_torch_and_gives_it_back(monkeypatch):
    img, probs = _crf_inputs(1)
    img, probs = img.cuda(), probs.cuda()
    crf = DenseCRF()
    crf(img, probs)  # warm torch's pool
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    taken = []
    made = []

    class Recording(TorchDeviceMemory):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

        def allocate(self, nbytes):
            taken.append(nbytes)
            return super().allocate(nbytes)

    monkeypatch.setattr("fastseg.crf.TorchDeviceMemory", Recording)
    out = crf(img, probs)
    assert taken and all(m.held_bytes() == 0 for m in made)
    del out
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == base


def test_crf_on_cuda_raises_on_bad_probs_and_keeps_no_memory():
    img, probs = _crf_inputs(2)
    crf = DenseCRF()
    crf(img.cuda(), probs.cuda())
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    probs[1, 5, 7] = float("nan")
    bad = probs.cuda()
    with pytest.raises(ValueError, match="probabilities"):
        crf(img.cuda(), bad)
    del bad
    gc.collect()  # the exception's traceback may still hold the call's own tensors
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == base
