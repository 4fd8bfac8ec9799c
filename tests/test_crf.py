"""fastseg.crf.DenseCRF against pydensecrf (the reference) on real CamVid frames, plus the contract:
array kinds, dtypes, layouts, batches, hard inputs and clear errors."""
from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf  # the reference: a required test dependency
import pytest
import torch
from PIL import Image

from fastseg import _native
from fastseg.crf import DenseCRF, PairwiseTerm

FRAMES = ("0016E5_07959.png", "0016E5_08085.png", "0016E5_08145.png")


def noisy_softmax(labels: np.ndarray, num_classes: int, seed: int, noise: float = 1.5) -> np.ndarray:
    """A coarse, noisy prediction: one-hot logits (x2) plus Gaussian noise, softmaxed -> [C,H,W] float32."""
    rng = np.random.default_rng(seed)
    lab = np.where(labels < num_classes, labels, 0)
    logits = 2.0 * np.eye(num_classes, dtype=np.float32)[lab].transpose(2, 0, 1)
    logits += rng.normal(0, noise, logits.shape).astype(np.float32)
    return torch.softmax(torch.from_numpy(logits), 0).numpy()


@pytest.fixture(scope="module")
def frames(camvid_root):
    """(image uint8 [H,W,3], labels uint8 [H,W]) of a few val frames, cropped to keep the tests fast."""
    out = []
    for i, name in enumerate(FRAMES):
        img = np.array(Image.open(camvid_root / "val" / name).convert("RGB"))
        lab = np.array(Image.open(camvid_root / "valannot" / name))
        y, x = 60 + 40 * i, 90 + 70 * i
        out.append((np.ascontiguousarray(img[y:y + 120, x:x + 160]), np.ascontiguousarray(lab[y:y + 120, x:x + 160])))
    return out


def agreement(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    return float((ours.argmax(0) == ref.argmax(0)).mean()), float(np.abs(ours - ref).mean())


# ------------------------------------------------------------------------------------------------
# Agreement with pydensecrf


@pytest.mark.parametrize("frame", range(len(FRAMES)))
def test_matches_pydensecrf_on_camvid(frames, frame):
    img, lab = frames[frame]
    probs = noisy_softmax(lab, 11, seed=frame)
    crf = DenseCRF()
    ours = crf(img, probs)
    ref = crf.reference(img, probs)
    labels_equal, mean_dq = agreement(ours, ref)
    assert labels_equal >= 0.995, labels_equal
    assert mean_dq <= 1e-3, mean_dq
    assert np.abs(ours - ref).max() < 1e-3  # same lattice: differences are float rounding only


@pytest.mark.parametrize("params", [
    dict(n_iter=1),
    dict(n_iter=10, sxy_gaussian=1, compat_gaussian=1, sxy_bilateral=30, srgb_bilateral=5, compat_bilateral=4),
    dict(sxy_gaussian=(2, 5), sxy_bilateral=(60, 90), srgb_bilateral=(10, 20, 30)),
    dict(compat_bilateral=0),
    dict(rounding="ties_down"),
])
def test_matches_pydensecrf_other_parameters(frames, params):
    img, lab = frames[0]
    probs = noisy_softmax(lab, 11, seed=7)
    crf = DenseCRF(**params)
    labels_equal, mean_dq = agreement(crf(img, probs), crf.reference(img, probs))
    # ties_down is pydensecrf's scalar build; the reference here is its SSE build, so that one is
    # only close, not equal (the rounding differs on exact ties only).
    assert labels_equal >= (0.99 if "rounding" in params else 0.995)
    assert mean_dq <= (5e-3 if "rounding" in params else 1e-3)


@pytest.mark.parametrize("num_classes", [2, 5, 21, 40])
def test_matches_pydensecrf_label_counts(frames, num_classes):
    img, lab = frames[1]
    probs = noisy_softmax(lab % num_classes, num_classes, seed=num_classes)
    crf = DenseCRF()
    labels_equal, mean_dq = agreement(crf(img, probs), crf.reference(img, probs))
    assert labels_equal >= 0.995 and mean_dq <= 1e-3


def test_logits_match_pydensecrf_unary(frames):
    img, lab = frames[2]
    logits = np.log(noisy_softmax(lab, 11, seed=3)) * 1.7
    crf = DenseCRF()
    labels_equal, mean_dq = agreement(crf(img, logits, logits=True), crf.reference(img, logits, logits=True))
    assert labels_equal >= 0.995 and mean_dq <= 1e-3


def test_generic_term_matches_pydensecrf_pairwise_energy(frames):
    """RGB plus a depth-like channel through PairwiseTerm == pydensecrf's addPairwiseEnergy on the same features."""
    img, lab = frames[0]
    h, w = lab.shape
    probs = noisy_softmax(lab, 11, seed=11)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = (yy / 7.0 + np.sin(xx / 9.0)).astype(np.float32)
    feats = np.dstack([img.astype(np.float32) / 13.0, depth]).astype(np.float32)  # already scaled
    crf = DenseCRF(compat_bilateral=0)
    ours = crf(None, probs, pairwise=[PairwiseTerm(feats, sdev=1.0, compat=5.0)])

    from pydensecrf.utils import unary_from_softmax
    d = dcrf.DenseCRF(h * w, 11)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    pos = np.stack([xx / 3.0, yy / 3.0]).reshape(2, -1).astype(np.float32)
    d.addPairwiseEnergy(np.ascontiguousarray(pos), compat=3.0)
    d.addPairwiseEnergy(np.ascontiguousarray(feats.transpose(2, 0, 1).reshape(4, -1)), compat=5.0)
    ref = np.array(d.inference(5), dtype=np.float32).reshape(11, h, w)
    labels_equal, mean_dq = agreement(ours, ref)
    assert labels_equal >= 0.995 and mean_dq <= 1e-3


def test_extra_channels_through_srgb(frames):
    """A 4-channel image with srgb per channel = the bilateral term on those 4 features."""
    img, lab = frames[1]
    probs = noisy_softmax(lab, 11, seed=5)
    extra = (np.arange(img.shape[0])[:, None] * 2 % 255).astype(np.uint8) * np.ones(img.shape[:2], np.uint8)
    img4 = np.dstack([img, extra])
    a = DenseCRF(srgb_bilateral=(13, 13, 13, 20))(img4, probs)
    h, w = lab.shape
    b = DenseCRF(compat_bilateral=0)(None, probs, pairwise=[
        PairwiseTerm(img4, sdev=(13, 13, 13, 20), sxy=80, compat=10)])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, DenseCRF()(img, probs))  # the fourth channel matters


# ------------------------------------------------------------------------------------------------
# Kinds, dtypes, layouts, batches, threads


def test_numpy_and_torch_in_same_kind_out(frames):
    img, lab = frames[0]
    probs = noisy_softmax(lab, 11, seed=1)
    crf = DenseCRF(n_iter=2)
    out_np = crf(img, probs)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32 and out_np.shape == probs.shape
    out_t = crf(torch.from_numpy(img), torch.from_numpy(probs))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_array_equal(out_t.numpy(), out_np)
    q, labels = crf(img, probs, return_labels=True)
    assert labels.dtype == np.uint8 and labels.shape == lab.shape
    np.testing.assert_array_equal(labels, q.argmax(0))
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_probs(frames, dtype):
    img, lab = frames[1]
    probs = torch.from_numpy(noisy_softmax(lab, 11, seed=2)).to(dtype)
    crf = DenseCRF(n_iter=3)
    out = crf(img, probs)
    assert out.dtype == dtype
    ref = crf(img, probs.float())  # the same computation on the widened input
    assert torch.equal(out, ref.to(dtype))


def test_read_only_and_non_contiguous_inputs(frames):
    img, lab = frames[2]
    probs = noisy_softmax(lab, 11, seed=4)
    crf = DenseCRF(n_iter=3)
    expected = crf(img, probs)
    ro_img, ro_probs = img.copy(), probs.copy()
    ro_img.setflags(write=False)
    ro_probs.setflags(write=False)
    np.testing.assert_array_equal(crf(ro_img, ro_probs), expected)
    # channels-last storage of the probabilities, and an image that is a strided view
    probs_cl = np.ascontiguousarray(probs.transpose(1, 2, 0)).transpose(2, 0, 1)
    big = np.zeros((img.shape[0], img.shape[1] * 2, 4), np.uint8)
    big[:, ::2, :3] = img
    np.testing.assert_array_equal(crf(big[:, ::2, :3], probs_cl), expected)
    t_probs = torch.from_numpy(probs).permute(1, 2, 0).contiguous().permute(2, 0, 1)
    np.testing.assert_array_equal(crf(torch.from_numpy(img), t_probs).numpy(), expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_batch_equals_images_one_by_one(frames, threads):
    imgs = np.stack([f[0] for f in frames])
    probs = np.stack([noisy_softmax(f[1], 11, seed=i) for i, f in enumerate(frames)])
    crf = DenseCRF(n_iter=3)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        batch = crf(imgs, probs)
        singles = np.stack([crf(imgs[i], probs[i]) for i in range(len(frames))])
    finally:
        torch.set_num_threads(old)
    np.testing.assert_array_equal(batch, singles)
    # one image shared by the whole batch (broadcast, no copy)
    shared = crf(imgs[0], probs[:2])
    np.testing.assert_array_equal(shared[1], crf(imgs[0], probs[1]))


def test_thread_count_does_not_change_results(frames):
    img, lab = frames[0]
    probs = noisy_softmax(lab, 11, seed=9)
    old = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(DenseCRF()(img, probs))
    finally:
        torch.set_num_threads(old)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])  # the splat sums in pixel order whatever the threads


def test_atomic_scatter_splat_equals_gather(frames):
    """The GPU's splat (atomic scatter, common/meanfield.h) run on the CPU with std-atomic adds."""
    img, lab = frames[1]
    probs = noisy_softmax(lab, 11, seed=6)
    crf = DenseCRF()
    a = crf(img, probs)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        b = crf(img, probs, _atomic_splat=True)
    finally:
        torch.set_num_threads(old)
    assert np.abs(a - b).max() < 1e-5  # sums in another order
    assert (a.argmax(0) == b.argmax(0)).mean() > 0.999


@pytest.fixture(scope="module")
def full_frame(camvid_root):
    """A whole 480x360 val frame: large enough (>= 2^15 pixels) that lattices and mean field run in
    two pixel chunks, built separately and merged."""
    img = np.array(Image.open(camvid_root / "val" / FRAMES[1]).convert("RGB"))
    lab = np.array(Image.open(camvid_root / "valannot" / FRAMES[1]))
    return img, lab


def test_full_frame_matches_pydensecrf(full_frame):
    img, lab = full_frame
    probs = noisy_softmax(lab, 11, seed=12)
    crf = DenseCRF()
    labels_equal, mean_dq = agreement(crf(img, probs), crf.reference(img, probs))
    assert labels_equal >= 0.995 and mean_dq <= 1e-3


def test_chunked_image_thread_count_does_not_change_results(full_frame):
    img, lab = full_frame
    img, lab = img[:200, :240], lab[:200, :240]  # 48000 pixels: two chunks
    probs = noisy_softmax(lab, 11, seed=13)
    noise = np.random.default_rng(0).integers(0, 256, img.shape, dtype=np.uint8)
    old = torch.get_num_threads()
    try:
        for image in (img, noise):  # a natural image, and one whose lattice has a vertex per corner
            results = []
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                results.append(DenseCRF(n_iter=3)(image, probs))
            for r in results[1:]:
                np.testing.assert_array_equal(r, results[0])
    finally:
        torch.set_num_threads(old)


def _tied_features(h: int, w: int, seed: int) -> np.ndarray:
    """Float features on a coarse grid: many points sit exactly on rounding and rank ties."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-12, 12, (h, w, 3)) / 4.0).astype(np.float32)


@pytest.mark.parametrize("rounding", ["half_even", "ties_down"])
@pytest.mark.parametrize("case", ["frame", "noise", "tied", "six_dims"])
def test_vector_lattice_equals_shared_scalar_code(full_frame, rounding, case):
    """The CPU's eight-lane lattice location (cpu/locate8.h) equals the shared scalar lattice::locate
    (common/permutohedral.h, the CUDA build's) bit for bit: the same simplexes and weights give the
    same output. Chunked images, random colours (many vertices), exact ties, generic dimensions."""
    img, lab = full_frame
    img, lab = img[100:300, 50:250], lab[100:300, 50:250]  # 40000 pixels: two chunks
    h, w = lab.shape
    probs = noisy_softmax(lab, 11, seed=14)
    crf = DenseCRF(n_iter=2, rounding=rounding)
    pairwise = ()
    if case == "noise":
        img = np.random.default_rng(1).integers(0, 256, img.shape, dtype=np.uint8)
    elif case == "tied":
        crf = DenseCRF(n_iter=2, rounding=rounding, compat_bilateral=0)
        pairwise = [PairwiseTerm(_tied_features(h, w, 2), sdev=0.5, sxy=(1.5, 2.0), compat=4)]
    elif case == "six_dims":
        depth = (np.arange(h)[:, None] * np.ones((1, w))).astype(np.uint8)
        img = np.dstack([img, depth])
        crf = DenseCRF(n_iter=2, rounding=rounding, srgb_bilateral=(13, 13, 13, 5))
    fast = crf(img, probs, pairwise=pairwise)
    ref = crf(img, probs, pairwise=pairwise, _reference_lattice=True)
    np.testing.assert_array_equal(fast, ref)


def test_no_pairwise_terms_is_softmax_of_unary():
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=(5, 6)).transpose(2, 0, 1).astype(np.float32)
    out = DenseCRF(compat_gaussian=0)(None, probs)
    clipped = np.clip(probs, 1e-5, 1)
    np.testing.assert_allclose(out, clipped / clipped.sum(0), rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Hard inputs


def test_one_pixel_image():
    img = np.array([[[10, 200, 30]]], np.uint8)
    probs = np.array([0.2, 0.8], np.float32).reshape(2, 1, 1)
    crf = DenseCRF()
    np.testing.assert_allclose(crf(img, probs), crf.reference(img, probs), atol=1e-6)


@pytest.mark.parametrize("params", [dict(srgb_bilateral=0.01), dict(srgb_bilateral=1e-3, sxy_gaussian=0.05),
                                    dict(sxy_bilateral=1e6, sxy_gaussian=1e7), dict(sxy_bilateral=1e-3)])
def test_extreme_scales(frames, params):
    img, lab = frames[2]
    img, lab = img[:40, :50], lab[:40, :50]
    probs = noisy_softmax(lab, 11, seed=8)
    out = DenseCRF(**params)(img, probs)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    if min(params.values()) >= 0.01:  # pydensecrf's int16 keys overflow for smaller scales
        ref = DenseCRF(**params).reference(img, probs)
        assert agreement(out, ref)[0] >= 0.995


def test_absurd_scale_is_a_clear_error():
    img = np.full((4, 4, 3), 255, np.uint8)
    probs = np.full((2, 4, 4), 0.5, np.float32)
    with pytest.raises(ValueError, match="too large for the lattice"):
        DenseCRF(srgb_bilateral=1e-9)(img, probs)


def test_bad_probabilities_are_clear_errors():
    img = np.zeros((3, 4, 3), np.uint8)
    probs = np.full((2, 3, 4), 0.5, np.float32)
    crf = DenseCRF()
    bad = probs.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="probabilities must be >= 0"):
        crf(img, bad)
    bad = probs.copy()
    bad[0, 0, 0] = -0.1
    with pytest.raises(ValueError, match="probabilities must be >= 0"):
        crf(img, bad)
    with pytest.raises(ValueError, match="logits contain NaN"):
        crf(img, np.where(np.isnan(bad), 0, np.full_like(bad, np.inf)), logits=True)


def test_shape_and_type_errors():
    img = np.zeros((3, 4, 3), np.uint8)
    probs = np.full((2, 3, 4), 0.5, np.float32)
    crf = DenseCRF()
    with pytest.raises(ValueError, match="image.*does not match probs"):
        crf(np.zeros((3, 5, 3), np.uint8), probs)
    with pytest.raises(ValueError, match="image.*does not match probs"):
        crf(np.zeros((2, 3, 4, 3), np.uint8), probs[None].repeat(3, 0))
    with pytest.raises(ValueError, match="probs: expected"):
        crf(img, probs[0])
    with pytest.raises(TypeError, match="probs: expected a floating-point"):
        crf(img, (probs * 100).astype(np.int32))
    with pytest.raises(TypeError, match="image: expected uint8 or floating"):
        crf(img.astype(np.int32), probs)
    with pytest.raises(ValueError, match="empty batch"):
        crf(img[None][:0], probs[None][:0])
    with pytest.raises(ValueError, match=r"number of labels must be in \[1, 256\]"):
        crf(img, np.full((257, 3, 4), 1 / 257, np.float32))
    with pytest.raises(ValueError, match="standard deviations"):
        crf(img, probs, pairwise=[PairwiseTerm(img, sdev=(1, 2))])
    with pytest.raises(ValueError, match="sxy_gaussian must be positive"):
        DenseCRF(sxy_gaussian=0)
    with pytest.raises(TypeError, match="expected a torch.Tensor, numpy.ndarray"):
        crf(img, probs.tolist())


def test_256_labels():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(256), size=(6, 7)).transpose(2, 0, 1).astype(np.float32)
    img = rng.integers(0, 255, (6, 7, 3), dtype=np.uint8)
    crf = DenseCRF()
    q, labels = crf(img, probs, return_labels=True)
    ref = crf.reference(img, probs)
    assert agreement(q, ref)[1] <= 1e-4
    np.testing.assert_array_equal(labels, q.argmax(0))


def test_cuda_entry_point_and_device_errors(monkeypatch):
    # The CUDA kernels are compiled in whenever nvcc was found at build time (no GPU needed); one entry
    # point serves both builds, and asking an extension without CUDA for a stream is a clear error.
    if not _native.has_cuda():
        with pytest.raises(ValueError, match="without CUDA"):
            _native.ext().densecrf(_native.buf(torch.zeros(1, 2, 3, 4)), False, [], 1, None, None,
                                   _native.ext().Rounding.half_even, cuda_stream=0)
    with pytest.raises(ValueError, match="unsupported device"):
        DenseCRF()(None, torch.zeros(2, 3, 4, device="meta"))
    if not torch.cuda.is_available():
        return  # no GPU on these machines: the CUDA path is compiled, not run
    monkeypatch.setattr(_native, "has_cuda", lambda: False)  # pragma: no cover
    with pytest.raises(RuntimeError, match="without CUDA"):  # pragma: no cover
        DenseCRF()(None, torch.zeros(2, 3, 4, device="cuda"))


def test_memory_bound_is_documented_formula():
    crf = DenseCRF()
    h, w, c = 360, 480, 11
    n, lp = h * w, 12
    bound = crf.memory_bound(h, w, c)
    mean_field = 3 * n * lp * 4
    lattices = sum(n * (d + 1) * 16 for d in (2, 5))
    assert mean_field + lattices < bound < 3000 * n  # worst case stays linear in pixels (bytes/pixel)
    assert crf.memory_bound(2 * h, 2 * w, c) == pytest.approx(4 * bound, rel=0.3)


def test_terms_cross_as_a_named_struct():
    """Pairwise terms reach C++ as fastseg._C.CrfTerm (fields by name, the feature type read from the
    buffer's own dtype), not as positional tuples."""
    ext = _native.ext()
    t = ext.CrfTerm(use_xy=True, sx=3.0, sy=4.0, compat=2.0)
    assert (t.use_xy, t.sx, t.sy, t.compat, t.has_features, t.divisors) == (True, 3.0, 4.0, 2.0, False, [])
    with pytest.raises(TypeError):
        ext.CrfTerm(True, 3.0, 3.0, None, [], 1.0)  # positional arguments are refused
    probs = torch.full((1, 2, 4, 5), 0.5)
    out = torch.empty_like(probs)
    wrong = torch.zeros(1, 4, 5, 3, dtype=torch.int16)
    term = ext.CrfTerm(use_xy=True, sx=1.0, sy=1.0, features=_native.buf(wrong), divisors=[1.0] * 3, compat=1.0)
    with pytest.raises(ValueError, match="unsupported dtype int16"):
        ext.densecrf(_native.buf(probs), False, [term], 1, _native.buf(out), None, ext.Rounding.half_even)
    with pytest.raises(ValueError, match="probs: expected float32, got float16"):
        ext.densecrf(_native.buf(probs.half()), False, [], 1, _native.buf(out), None, ext.Rounding.half_even)
