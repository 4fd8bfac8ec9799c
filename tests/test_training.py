"""Fine-tuning tools: losses against F.cross_entropy and plain references, joint augmentation,
and the resumable training loop on a tiny model and tiny synthetic data (CPU, a few seconds)."""
from __future__ import annotations

import itertools
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastseg.training import (
    CameraJitter,
    ColorJitter,
    CrossEntropyLoss,
    DistillationLoss,
    FocalLoss,
    OhemCrossEntropy,
    PasteClasses,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    SoftmaxAverage,
    ToTensor,
    cross_entropy,
    distillation_kl,
    evaluate,
    focal_loss,
    label_statistics,
    median_frequency_weights,
    ohem_cross_entropy,
    save_atomic,
    train,
    train_transform,
)
from fastseg.training.augment import IMAGENET_MEAN, IMAGENET_STD

IGNORE = 255


def make_batch(n, c, h, w, ignore_frac=0.2, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, c, h, w, generator=g) * 3).to(dtype)
    target = torch.randint(0, c, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < ignore_frac] = IGNORE
    return logits, target


SHAPES = [(1, 2, 1, 1), (2, 5, 7, 9), (3, 11, 13, 6), (1, 19, 16, 17)]


# ---- losses --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cross_entropy_matches_torch(shape, weighted, dtype):
    logits, target = make_batch(*shape, seed=sum(shape), dtype=dtype)
    target.view(-1)[0] = 0  # at least one counted pixel
    weight = torch.rand(shape[1], generator=torch.Generator().manual_seed(1)) + 0.1 if weighted else None
    ref_logits = logits.float().clone().requires_grad_()
    ours_logits = logits.clone().detach().requires_grad_()
    ref = F.cross_entropy(ref_logits, target, weight=weight, ignore_index=IGNORE)
    ours = cross_entropy(ours_logits, target, weight=weight, ignore_index=IGNORE)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    ref.backward()
    ours.backward()
    torch.testing.assert_close(ours_logits.grad.float(), ref_logits.grad, rtol=1e-2 if dtype != torch.float32 else 1e-5,
                               atol=1e-3 if dtype != torch.float32 else 1e-7)
    # the module form, and channels_last / non-contiguous logits
    module = CrossEntropyLoss(weight=weight)
    torch.testing.assert_close(module(logits.contiguous(memory_format=torch.channels_last), target), ref,
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cross_entropy(logits.transpose(2, 3).contiguous().transpose(2, 3), target, weight),
                               ref, rtol=1e-5, atol=1e-6)


def focal_reference(logits, target, gamma, weight=None):
    """Per pixel, from the definition, in float64."""
    total, norm = 0.0, 0.0
    p = torch.softmax(logits.double(), 1)
    for n, y, x in itertools.product(*(range(s) for s in target.shape)):
        t = int(target[n, y, x])
        if t == IGNORE:
            continue
        w = 1.0 if weight is None else float(weight[t])
        pt = float(p[n, t, y, x])
        total += w * -((1 - pt) ** gamma) * np.log(pt)
        norm += w
    return total / norm if norm else 0.0


@pytest.mark.parametrize("shape", SHAPES[:3])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss(shape, gamma):
    logits, target = make_batch(*shape, seed=3)
    target.view(-1)[0] = 1 % shape[1]
    weight = torch.linspace(0.5, 2.0, shape[1])
    for w in (None, weight):
        ours = focal_loss(logits, target, gamma, weight=w)
        assert abs(ours.item() - focal_reference(logits, target, gamma, w)) < 1e-5
        if gamma == 0:
            torch.testing.assert_close(ours, F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE))
        else:
            assert ours.item() < F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE).item()
    torch.testing.assert_close(FocalLoss(gamma)(logits, target), focal_loss(logits, target, gamma))


def test_ohem_keeps_everything_when_thresh_is_one():
    logits, target = make_batch(2, 7, 9, 11, seed=5)
    weight = torch.linspace(0.2, 3.0, 7)
    for w in (None, weight):
        torch.testing.assert_close(ohem_cross_entropy(logits, target, thresh=1.0, min_kept=1, weight=w),
                                   F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE))


@pytest.mark.parametrize("k", [1, 10, 57])
def test_ohem_keeps_the_k_hardest_pixels(k):
    logits, target = make_batch(2, 5, 8, 9, seed=k)
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    valid = target != IGNORE
    hardest = per_pixel[valid].sort(descending=True).values[:k]
    ours = ohem_cross_entropy(logits, target, thresh=0.0, min_kept=k)
    torch.testing.assert_close(ours, hardest.mean())
    # min_kept beyond the valid pixel count keeps them all
    torch.testing.assert_close(ohem_cross_entropy(logits, target, thresh=0.0, min_kept=10**6),
                               F.cross_entropy(logits, target, ignore_index=IGNORE))
    torch.testing.assert_close(OhemCrossEntropy(0.0, k)(logits, target), ours)


def test_ohem_threshold_selects_low_confidence_pixels():
    logits, target = make_batch(1, 4, 10, 10, seed=8)
    p_true = torch.softmax(logits, 1).gather(1, target.clamp(max=3).unsqueeze(1)).squeeze(1)
    keep = (target != IGNORE) & (p_true <= 0.5)
    assert 0 < int(keep.sum()) < int((target != IGNORE).sum())
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    torch.testing.assert_close(ohem_cross_entropy(logits, target, thresh=0.5, min_kept=1), per_pixel[keep].mean())


ALL_LOSSES = {
    "ce": lambda lg, t, w: cross_entropy(lg, t, w),
    "focal": lambda lg, t, w: focal_loss(lg, t, 2.0, w),
    "ohem": lambda lg, t, w: ohem_cross_entropy(lg, t, 0.7, 16, w),
}


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("weighted", [False, True])
def test_all_ignored_gives_zero_and_finite_gradients(name, weighted):
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    target = torch.full((2, 5, 6), IGNORE)
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0]) if weighted else None
    loss = ALL_LOSSES[name](logits, target, weight)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_gradients_finite_with_extreme_logits(name):
    logits, target = make_batch(2, 6, 7, 5, seed=2)
    logits = (logits * 1000).requires_grad_()  # saturated softmax
    loss = ALL_LOSSES[name](logits, target, torch.linspace(0.1, 2, 6))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_loss_input_errors(name):
    fn = ALL_LOSSES[name]
    logits = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="target shape"):
        fn(logits, torch.zeros(2, 4, 5, dtype=torch.long), None)
    with pytest.raises(TypeError, match="integer"):
        fn(logits, torch.zeros(2, 4, 4), None)
    with pytest.raises(ValueError, match="outside"):
        fn(logits, torch.full((2, 4, 4), 3), None)
    with pytest.raises(ValueError, match="weight"):
        fn(logits, torch.zeros(2, 4, 4, dtype=torch.long), torch.ones(4))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_distillation_kl_matches_torch_kl_div(shape, temperature, dtype):
    student, target = make_batch(*shape, seed=sum(shape), dtype=dtype)
    teacher, _ = make_batch(*shape, seed=sum(shape) + 1, dtype=dtype)
    target.view(-1)[0] = 0  # at least one counted pixel
    ours_student = student.clone().requires_grad_()
    ref_student = student.float().clone().requires_grad_()
    ours = distillation_kl(ours_student, teacher, target, temperature)
    per_pixel = F.kl_div(F.log_softmax(ref_student / temperature, 1), F.log_softmax(teacher.float() / temperature, 1),
                         log_target=True, reduction="none").sum(1)
    counted = target != IGNORE
    ref = per_pixel[counted].mean() * temperature ** 2
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6)
    ours.backward()
    ref.backward()
    assert torch.allclose(ours_student.grad.float(), ref_student.grad, rtol=1e-2, atol=1e-5)
    assert (ours_student.grad.float().permute(0, 2, 3, 1)[~counted] == 0).all()  # ignored pixels teach nothing


def test_distillation_kl_is_zero_where_the_student_agrees_and_never_moves_the_teacher():
    logits, target = make_batch(2, 5, 6, 7, seed=3)
    teacher = logits.clone().requires_grad_()
    student = logits.clone().requires_grad_()
    loss = distillation_kl(student, teacher, target, 2.0)
    assert abs(loss.item()) < 1e-6
    (loss + distillation_kl(student * 0.5, teacher, target)).backward()
    assert teacher.grad is None and student.grad is not None
    everything_ignored = distillation_kl(student, teacher, torch.full_like(target, IGNORE))
    assert everything_ignored.item() == 0.0


def test_distillation_input_errors():
    logits, target = make_batch(2, 3, 4, 4)
    with pytest.raises(ValueError, match="teacher logits"):
        distillation_kl(logits, logits[:, :2], target)
    with pytest.raises(ValueError, match="temperature"):
        distillation_kl(logits, logits, target, 0.0)
    with pytest.raises(ValueError, match="target shape"):
        distillation_kl(logits, logits, target[:, :3])
    with pytest.raises(ValueError, match="alpha"):
        DistillationLoss(CrossEntropyLoss(), alpha=1.5)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_distillation_loss_mixes_labels_and_teacher(alpha):
    student, target = make_batch(2, 6, 5, 8, seed=4)
    teacher, _ = make_batch(2, 6, 5, 8, seed=5)
    weight = torch.linspace(0.5, 2.0, 6)
    mixed = DistillationLoss(CrossEntropyLoss(weight=weight), alpha=alpha, temperature=3.0)(student, target, teacher)
    expected = ((1 - alpha) * cross_entropy(student, target, weight)
                + alpha * distillation_kl(student, teacher, target, 3.0))
    assert torch.allclose(mixed, expected)


def test_softmax_average_is_the_mean_of_the_models_probabilities():
    torch.manual_seed(0)
    models = [TinyNet().eval() for _ in range(3)]
    images = torch.randn(2, 3, 9, 11)
    with torch.no_grad():
        mean = torch.stack([m(images).softmax(1) for m in models]).mean(0)
        out = SoftmaxAverage(models)(images)
        assert out.shape == (2, 3, 5, 6)
        assert torch.allclose(out.softmax(1), mean, atol=1e-6) and torch.allclose(out.exp().sum(1), torch.ones(1))
        alone = SoftmaxAverage(models[:1])(images)
        assert torch.allclose(alone.softmax(1), models[0](images).softmax(1), atol=1e-6)

        class Dict(nn.Module):  # torchvision's models give a dict
            def forward(self, x):
                return {"out": models[1](x)}

        assert torch.allclose(SoftmaxAverage([models[0], Dict()])(images).exp(),
                              (models[0](images).softmax(1) + models[1](images).softmax(1)) / 2, atol=1e-6)

        class Certain(nn.Module):  # probabilities that underflow to 0 in fp32
            def forward(self, x):
                return torch.tensor([1e4, 0.0, -1e4]).view(1, 3, 1, 1).expand(len(x), 3, 5, 6)

        assert torch.isfinite(SoftmaxAverage([Certain()])(images)).all()  # finite logits all the same
    with pytest.raises(ValueError, match="at least one"):
        SoftmaxAverage([])
    with pytest.raises(ValueError, match="shape"):
        SoftmaxAverage([models[0], nn.Conv2d(3, 3, 1)])(images)


def test_median_frequency_weights_from_label_statistics():
    labels = [np.array([[0, 0, 1], [1, 255, 2]]), np.array([[0, 0, 0], [0, 0, 255]]), np.array([[2, 2, 2]])]
    counts, image_pixels = label_statistics(labels, 4)
    # by hand from the definition: pixels of c / pixels of the images containing c
    assert counts.tolist() == [7, 2, 4, 0]
    assert image_pixels.tolist() == [12, 6, 9, 0]
    freq = np.array([7 / 12, 2 / 6, 4 / 9])
    expected = np.median(freq) / freq
    weights = median_frequency_weights(counts, image_pixels)
    assert weights.dtype == torch.float32 and weights[3] == 0  # absent class: weight 0
    np.testing.assert_allclose(weights[:3].numpy(), expected, rtol=1e-6)
    plain = median_frequency_weights(counts)  # from the histogram alone
    np.testing.assert_allclose(plain[:3].numpy(), np.median([7, 2, 4]) / np.array([7, 2, 4]), rtol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        label_statistics([np.array([[5]])], 4)
    with pytest.raises(ValueError, match="no class"):
        median_frequency_weights([0, 0])


def test_median_frequency_weights_on_camvid_subset(camvid_root):
    from fastseg.data import CamVid

    train = CamVid(camvid_root, "train")
    subset = torch.utils.data.Subset(train, range(0, len(train), 12))
    counts, image_pixels = label_statistics((train.read_label(i) for i in subset.indices), 11)
    weights = median_frequency_weights(counts, image_pixels)
    # the rare thin classes (pole, sign, pedestrian, bicyclist) weigh more than the big flat ones
    big = [0, 1, 3]  # sky, building, road
    rare = [2, 6, 9, 10]
    assert weights[rare].min() > weights[big].max()
    assert (weights > 0).all() and torch.isclose(weights.median(), torch.tensor(1.0))


# ---- augmentation --------------------------------------------------------------------------------

def stripes(h=30, w=40, width=5):
    """A label of vertical stripes and an image whose red channel encodes the label."""
    label = (np.arange(w)[None, :] // width % 6).repeat(h, 0).astype(np.uint8)
    label[: h // 4] = 255
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = label.astype(np.int64) * 40 % 256
    image[..., 1] = np.arange(h)[:, None] * 3
    return image, label


def test_random_scale_range_and_nearest_labels():
    image, label = stripes()
    g = torch.Generator().manual_seed(0)
    scale = RandomScale(0.5, 2.0, generator=g)
    sizes = set()
    for _ in range(20):
        im, lb = scale(image, label)
        assert im.shape[:2] == lb.shape and im.dtype == np.uint8 and lb.dtype == np.uint8
        assert 15 <= lb.shape[0] <= 60 and 20 <= lb.shape[1] <= 80
        assert abs(lb.shape[1] / lb.shape[0] - 4 / 3) < 0.1
        assert set(np.unique(lb)) <= set(np.unique(label))  # nearest: no invented ids
        sizes.add(lb.shape)
    assert len(sizes) > 5
    im, lb = RandomScale(1.0, 1.0)(image, label)
    assert np.array_equal(im, image) and np.array_equal(lb, label)
    with pytest.raises(ValueError):
        RandomScale(0, 1)


def test_random_crop_pads_label_with_ignore():
    image, label = stripes(10, 12)
    im, lb = RandomCrop((16, 20), fill=(1, 2, 3), generator=torch.Generator().manual_seed(0))(image, label)
    assert im.shape == (16, 20, 3) and lb.shape == (16, 20)
    assert np.array_equal(lb[:10, :12], label) and (lb[10:] == 255).all() and (lb[:, 12:] == 255).all()
    assert np.array_equal(im[:10, :12], image) and (im[10:] == (1, 2, 3)).all()
    # larger input: a window of it, image and label from the same place
    image, label = stripes(30, 40)
    for seed in range(5):
        im, lb = RandomCrop(8, generator=torch.Generator().manual_seed(seed))(image, label)
        found = [(y, x) for y in range(23) for x in range(33) if np.array_equal(image[y:y + 8, x:x + 8], im)]
        assert found and any(np.array_equal(label[y:y + 8, x:x + 8], lb) for y, x in found)


def test_flip_and_jitter():
    image, label = stripes()
    im, lb = RandomHorizontalFlip(1.0)(image, label)
    assert np.array_equal(im, image[:, ::-1]) and np.array_equal(lb, label[:, ::-1])
    im, lb = RandomHorizontalFlip(0.0)(image, label)
    assert im is image and lb is label
    g = torch.Generator().manual_seed(0)
    im, lb = ColorJitter(0.4, 0.4, 0.4, 0.1, generator=g)(image, label)
    assert lb is label and im.shape == image.shape and im.dtype == np.uint8 and not np.array_equal(im, image)
    im, _ = ColorJitter(0, 0, 0, 0)(image, label)
    assert np.array_equal(im, image)


def test_camera_jitter_changes_the_image_only_and_repeats():
    image, label = stripes()
    a, la = CameraJitter(generator=torch.Generator().manual_seed(3))(image, label)
    b, _ = CameraJitter(generator=torch.Generator().manual_seed(3))(image, label)
    assert la is label and a.dtype == np.uint8 and a.shape == image.shape
    assert np.array_equal(a, b) and not np.array_equal(a, image)
    neutral, _ = CameraJitter(gamma=1, balance=0, blur=0, noise=0)(image, label)
    assert np.array_equal(neutral, image)


def test_camera_jitter_parts():
    """Each part alone does what it says, on a grey ramp (every level 0..255 once per channel)."""
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2).repeat(4, axis=0)
    label = np.zeros(ramp.shape[:2], np.uint8)
    for seed in range(1, 5):  # (seed 0 draws a gamma within 0.5 % of 1: the curve rounds to the identity)
        def alone(seed=seed, **kwargs):
            parts = dict(dict(gamma=1, balance=0, blur=0, noise=0), **kwargs)
            return CameraJitter(**parts, generator=torch.Generator().manual_seed(seed))(ramp, label)[0]

        # the exposure curve: monotonic, ends fixed, grey stays grey
        curve = alone(gamma=2.0)[0, :, 0].astype(int)
        assert (np.diff(curve) >= 0).all() and curve[0] == 0 and curve[-1] == 255
        assert not np.array_equal(curve, np.arange(256)) and (alone(gamma=2.0) == curve[None, :, None]).all()
        # white balance: each channel scaled by its own gain within the range
        gains = alone(balance=0.2)[0, 50:200].astype(float) / np.arange(50, 200)[:, None]
        assert np.ptp(gains, axis=0).max() < 0.02 and (np.abs(gains.mean(0) - 1) <= 0.2 + 0.01).all()
        assert np.ptp(gains.mean(0)) > 0.001
        # noise: unbiased, so the mean level stays; the pixels move
        noisy = alone(noise=8.0).astype(float)
        assert abs(noisy[:, 20:236].mean() - ramp[:, 20:236].mean()) < 1.0
        # blur: half the time, and it keeps a ramp's interior
        blurred = alone(blur=2.0).astype(int)
        assert np.abs(blurred[:, 8:248] - ramp[:, 8:248]).max() <= 1
    # ...and only half the time: a step edge is softened for some seeds and left sharp for others
    edge = np.zeros((8, 16, 3), np.uint8)
    edge[:, 8:] = 255
    blurs = [CameraJitter(gamma=1, balance=0, blur=2.0, noise=0, generator=torch.Generator().manual_seed(seed))
             for seed in range(32)]
    softened = [not np.array_equal(blur(edge, edge[..., 0])[0], edge) for blur in blurs]
    assert 4 < sum(softened) < 28
    with pytest.raises(ValueError):
        CameraJitter(gamma=0.5)
    with pytest.raises(ValueError):
        CameraJitter(balance=1.0)
    with pytest.raises(ValueError):
        CameraJitter(noise=-1)


def scene(seed, h=9, w=13, classes=(0, 1, 2, 3)):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (h, w, 3), dtype=np.uint8), g.choice(np.array(classes, np.uint8), (h, w))


@pytest.mark.parametrize("size", [(9, 13), (1, 1), (16, 7)])
def test_paste_classes_copies_exactly_the_chosen_classes_pixels(size):
    frames = [scene(seed, *size) for seed in range(5)]
    target = scene(99, *size, classes=(0, 1))  # no class 2 or 3 of its own
    paste = PasteClasses(frames, classes=[3, 2], p=1.0, generator=torch.Generator().manual_seed(0))
    candidates = paste.sources + [(image[:, ::-1], label[:, ::-1]) for image, label in paste.sources]
    for _ in range(20):
        image, label = paste(*target)
        assert image.dtype == np.uint8 and label.dtype == np.uint8
        mask = np.isin(label, [2, 3])
        assert np.array_equal(image[~mask], target[0][~mask]) and np.array_equal(label[~mask], target[1][~mask])
        # the pasted pixels are one source frame's (as it is or mirrored) pixels of classes 2 and 3, in place
        assert any(np.array_equal(mask, np.isin(src_label, [2, 3])) and np.array_equal(image[mask], src_image[mask])
                   and np.array_equal(label[mask], src_label[mask]) for src_image, src_label in candidates)
    assert np.array_equal(target[1], scene(99, *size, classes=(0, 1))[1])  # the input is not written to


def test_paste_classes_draws_only_frames_with_the_classes_and_keeps_other_sizes():
    without = scene(1, classes=(0, 1))
    with_class = scene(2, classes=(0, 3))
    paste = PasteClasses([without, with_class, without], classes=[3], p=1.0)
    assert len(paste.sources) == 1 and paste.sources[0][1] is with_class[1]
    other = scene(3, 5, 6, classes=(0,))
    image, label = paste(*other)
    assert image is other[0] and label is other[1]
    never = PasteClasses([with_class], classes=[3], p=0.0)
    image, label = never(*without)
    assert image is without[0] and label is without[1]
    g = torch.Generator().manual_seed(0)
    half = PasteClasses([with_class], classes=[3], p=0.5, generator=g)
    pasted = sum((half(*without)[1] == 3).any() for _ in range(400))
    assert 150 < pasted < 250
    with pytest.raises(ValueError, match="nothing to paste"):
        PasteClasses([without], classes=[3])
    with pytest.raises(ValueError, match="p must"):
        PasteClasses([with_class], classes=[3], p=1.5)
    with pytest.raises(ValueError, match="at least one class"):
        PasteClasses([with_class], classes=[])


def test_to_tensor_normalises():
    image, label = stripes(4, 5)
    image.setflags(write=False)
    x, y = ToTensor()(image, label)
    assert x.shape == (3, 4, 5) and x.dtype == torch.float32 and y.dtype == torch.int64
    expected = (image[..., 1] / 255.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    np.testing.assert_allclose(x[1].numpy(), expected, rtol=1e-6, atol=1e-6)
    assert np.array_equal(y.numpy(), label)


def test_train_transform_keeps_image_and_label_aligned():
    image, label = stripes(60, 80, width=10)
    transform = train_transform((32, 48), jitter=0.0, mean=(0, 0, 0), std=(1, 1, 1),
                                generator=torch.Generator().manual_seed(3))
    for _ in range(10):
        x, y = transform(image, label)
        assert x.shape == (3, 32, 48) and y.shape == (32, 48)
        red = (x[0] * 255).round().long()
        counted = (y != 255)
        # within half a step of the label's colour; bilinear blends only along stripe edges
        agree = ((red[counted] - y[counted] * 40).abs() <= 20).float().mean()
        assert agree > 0.85
    # the same generator seed gives the same samples
    a = train_transform(16, generator=torch.Generator().manual_seed(9))(image, label)
    b = train_transform(16, generator=torch.Generator().manual_seed(9))(image, label)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ---- the training loop ---------------------------------------------------------------------------

class TinyNet(nn.Module):
    """Stride-2 logits (so the loop's upsampling is exercised), BatchNorm and dropout."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Dropout2d(0.1), nn.Conv2d(8, num_classes, 1))

    def forward(self, x):
        return self.body(x)


class ToyDataset(torch.utils.data.Dataset):
    """Label = which of 3 colours dominates a pixel's neighbourhood, with an ignored border."""

    num_classes = 3

    def __init__(self, n, size=(12, 16), seed=0, transform=None):
        g = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            label = np.kron(g.integers(0, 3, (size[0] // 4, size[1] // 4)), np.ones((4, 4), np.int64)).astype(np.uint8)
            image = np.zeros((*size, 3), np.uint8)
            for c in range(3):
                image[..., c] = np.where(label == c, 200, 30) + g.integers(0, 20, size)
            label[0] = 255
            self.items.append((image, label))
        self.transform = transform or ToTensor()

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.transform(*self.items[i])


def augmented_toy(n, seed):
    return ToyDataset(n, seed=seed, transform=train_transform((12, 16), scale=(0.75, 1.5), jitter=0.2))


def test_training_smoke_learns_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    result = train(model, ToyDataset(16, seed=1), ToyDataset(4, seed=2), epochs=4, batch_size=4, lr=0.05,
                   checkpoint_dir=tmp_path, progress=True, log=None, val_every=2)
    assert result.epochs_done == 4 and len(result.history) == 4
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0] and all(np.isfinite(losses))
    assert "miou" in result.history[1] and "miou" not in result.history[0] and "miou" in result.history[3]
    assert result.best_miou > 0.5  # a learnable toy task
    assert result.history[-1]["lr"] < 0.05 * 0.5  # the poly schedule ran down
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "last.pt"]  # no temporary files left
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 4 and state["best_miou"] == result.best_miou
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["miou"] == result.best_miou
    # a finished run called again resumes at its end and trains no more
    again = train(TinyNet(), ToyDataset(16, seed=1), None, epochs=4, batch_size=4, lr=0.05,
                  checkpoint_dir=tmp_path, progress=False, log=None)
    assert len(again.history) == 4


class Interrupt(Exception):
    pass


def interrupted_then_resumed(folder, **kwargs):
    """The toy run stopped after its first epoch, then resumed from its checkpoint by a fresh model
    (as a new process would); returns that model and the resumed run's result."""
    def stop_after_first(epoch, record):
        if epoch == 1:
            raise Interrupt

    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        train(TinyNet(), augmented_toy(12, 1), ToyDataset(3, seed=2), checkpoint_dir=folder,
              on_epoch_end=stop_after_first, **kwargs)
    assert torch.load(folder / "last.pt", weights_only=True)["epoch"] == 1
    torch.manual_seed(123)  # a fresh process: different init and RNG state, all replaced by the resume
    model = TinyNet()
    return model, train(model, augmented_toy(12, 1), ToyDataset(3, seed=2), checkpoint_dir=folder, **kwargs)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_resume_gives_identical_weights(tmp_path, optimizer):
    kwargs = dict(epochs=3, batch_size=4, lr=0.02, optimizer=optimizer, warmup_iters=2, progress=False,
                  log=None, seed=7)
    torch.manual_seed(0)
    straight_model = TinyNet()
    straight = train(straight_model, augmented_toy(12, 1), ToyDataset(3, seed=2),
                     checkpoint_dir=tmp_path / "a", **kwargs)

    resumed_model, resumed = interrupted_then_resumed(tmp_path / "b", **kwargs)
    a, b = straight_model.state_dict(), resumed_model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["loss"] for r in straight.history] == [r["loss"] for r in resumed.history]
    assert straight.best_miou == resumed.best_miou


def test_bf16_autocast_runs_the_network_in_bf16_and_the_rest_in_fp32():
    from fastseg.training.loop import _forward

    torch.manual_seed(0)
    model = TinyNet().eval()
    images = torch.stack([ToyDataset(4, seed=5)[i][0] for i in range(4)])
    exact = _forward(model, images, (12, 16))
    low = _forward(model, images, (12, 16), torch.bfloat16)
    assert low.dtype == torch.float32 and low.shape == exact.shape == (4, 3, 12, 16)
    assert not torch.equal(low, exact)  # the convolutions ran in bf16...
    with torch.autocast("cpu", dtype=torch.bfloat16):
        network = model(images).float()
    # ...and only they: the upsampling ran on their fp32 copy
    assert torch.equal(low, F.interpolate(network, size=(12, 16), mode="bilinear", align_corners=False))
    assert torch.allclose(low, exact, atol=0.05 * exact.abs().max().item())


def test_bf16_channels_last_training_learns_resumes_and_hands_back_contiguous_weights(tmp_path):
    kwargs = dict(epochs=3, batch_size=4, lr=0.02, warmup_iters=2, progress=False, log=None, seed=5,
                  ema_decay=0.9, autocast=torch.bfloat16, channels_last=True)
    torch.manual_seed(0)
    model = TinyNet()
    straight = train(model, augmented_toy(12, 1), ToyDataset(3, seed=2), checkpoint_dir=tmp_path / "a", **kwargs)
    resumed_model, resumed = interrupted_then_resumed(tmp_path / "b", **kwargs)
    for trained, again in ((model, resumed_model), (straight.ema, resumed.ema)):
        assert all(t.is_contiguous() for t in trained.state_dict().values())
        for key, value in trained.state_dict().items():
            assert torch.equal(value, again.state_dict()[key]), key
    assert not model.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    torch.manual_seed(0)
    in_fp32 = TinyNet()
    train(in_fp32, augmented_toy(12, 1), ToyDataset(3, seed=2), **dict(kwargs, autocast=None))
    moved = [(value - in_fp32.state_dict()[key]).abs().max().item()
             for key, value in model.state_dict().items() if value.is_floating_point()]
    assert 0 < max(moved) < 0.1  # the training passes ran in bf16, and came out near fp32's
    learned = train(TinyNet(), ToyDataset(16, seed=1), ToyDataset(4, seed=2), epochs=4, batch_size=4, lr=0.05,
                    progress=False, log=None, autocast=torch.bfloat16, channels_last=True)
    assert learned.best_miou > 0.5
    with pytest.raises(ValueError, match="autocast"):
        train(TinyNet(), ToyDataset(4), autocast=torch.float32, log=None, progress=False)


def test_weight_average_is_scored_saved_and_resumed(tmp_path):
    """ema_decay: the average (not the live weights) is returned and kept in best.pt, and an interrupted
    run resumes it to the same values; a checkpoint without an average cannot resume one."""
    kwargs = dict(epochs=3, batch_size=4, lr=0.02, warmup_iters=2, progress=False, log=None, seed=3,
                  ema_decay=0.9)
    torch.manual_seed(0)
    model = TinyNet()
    straight = train(model, augmented_toy(12, 1), ToyDataset(3, seed=2), checkpoint_dir=tmp_path / "a", **kwargs)
    assert straight.ema is not None and straight.ema is not model
    live, avg = model.state_dict(), straight.ema.state_dict()
    assert any(not torch.equal(live[k], avg[k]) for k in live if live[k].is_floating_point())
    best = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    if best["epoch"] == 3:
        for key, value in avg.items():
            assert torch.equal(best["model"][key], value), key

    _, resumed = interrupted_then_resumed(tmp_path / "b", **kwargs)
    for key, value in straight.ema.state_dict().items():
        assert torch.equal(value, resumed.ema.state_dict()[key]), key
    train(TinyNet(), augmented_toy(12, 1), ToyDataset(3, seed=2), checkpoint_dir=tmp_path / "c",
          **dict(kwargs, ema_decay=None))
    with pytest.raises(ValueError, match="weight average"):
        train(TinyNet(), augmented_toy(12, 1), ToyDataset(3, seed=2), checkpoint_dir=tmp_path / "c", **kwargs)


def test_a_student_learns_from_its_teacher_alone(tmp_path):
    """teacher=: the loss gets the teacher's logits of the same augmented batch, at the label's size;
    with alpha=1 the labels only say which pixels count, so agreeing with the teacher is learned from
    the teacher. The teacher comes out unchanged (eval mode, no gradients)."""
    torch.manual_seed(0)
    teacher = TinyNet()
    train(teacher, ToyDataset(16, seed=1), None, epochs=6, batch_size=4, lr=0.05, progress=False, log=None)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    seen = []

    class Recording(DistillationLoss):
        def forward(self, logits, target, teacher_logits):
            seen.append((teacher_logits.shape, logits.shape, teacher_logits.requires_grad))
            return super().forward(logits, target, teacher_logits)

    torch.manual_seed(1)
    student = TinyNet()
    untaught = pickle.loads(pickle.dumps(student))
    assert teacher.training  # as its own training left it: train() must switch it to eval mode
    train(student, augmented_toy(16, 1), None, epochs=6, batch_size=4, lr=0.05, progress=False, log=None,
          loss_fn=Recording(CrossEntropyLoss(), alpha=1.0), teacher=teacher, checkpoint_dir=tmp_path)
    assert not teacher.training
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert seen and all(t == s and t[-2:] == (12, 16) and not grad for t, s, grad in seen)

    def agreement(model):
        with torch.no_grad():
            images = torch.stack([ToyDataset(8, seed=9)[i][0] for i in range(8)])
            return (model.eval()(images).argmax(1) == teacher(images).argmax(1)).float().mean().item()

    assert agreement(student) > max(0.9, agreement(untaught) + 0.2)


def test_weight_average_update_rule():
    from fastseg.training.loop import WeightAverage

    live = nn.Linear(3, 2)
    average = WeightAverage(live, 0.5)
    start = live.weight.detach().clone()
    with torch.no_grad():
        live.weight.add_(1.0)
    average.update(live, step=100)  # past the ramp: decay 0.5
    assert torch.allclose(average.model.weight, start + 0.5)
    assert not average.model.weight.requires_grad
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(live, 1.0)


def test_resume_refuses_a_different_run(tmp_path):
    train(TinyNet(), ToyDataset(8), None, epochs=1, batch_size=4, checkpoint_dir=tmp_path, progress=False, log=None)
    with pytest.raises(ValueError, match="resume"):
        train(TinyNet(), ToyDataset(8), None, epochs=2, batch_size=4, checkpoint_dir=tmp_path, progress=False, log=None)
    fresh = train(TinyNet(), ToyDataset(8), None, epochs=2, batch_size=4, checkpoint_dir=tmp_path,
                  resume=False, progress=False, log=None)
    assert len(fresh.history) == 2


def test_train_argument_errors():
    with pytest.raises(ValueError, match="epochs"):
        train(TinyNet(), ToyDataset(4), epochs=0)
    with pytest.raises(ValueError, match="optimizer"):
        train(TinyNet(), ToyDataset(4), optimizer="adam", log=None, progress=False)
    with pytest.raises(ValueError, match="empty"):
        train(TinyNet(), ToyDataset(0))


def test_save_atomic_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_atomic({"x": torch.ones(2)}, path)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        save_atomic({"bad": lambda: None}, path)  # not picklable: torch.save fails midway
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))


class FixedPredictor(nn.Module):
    """Predicts given label maps (as one-hot logits at half resolution); the input's first value
    says which sample it is."""

    def __init__(self, pred, num_classes):
        super().__init__()
        self.register_buffer("logits", F.one_hot(pred, num_classes).permute(0, 3, 1, 2).float())

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


def test_evaluate_matches_a_plain_confusion_matrix():
    g = torch.Generator().manual_seed(0)
    n, c = 3, 4
    pred_small = torch.randint(0, c, (n, 5, 6), generator=g)
    target = torch.randint(0, c, (n, 10, 12), generator=g)
    target[:, 0] = IGNORE
    target[target == 3] = 0  # class 3: predicted only, never in the ground truth
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 10, 12)
    dataset = torch.utils.data.TensorDataset(images, target)
    scores = evaluate(FixedPredictor(pred_small, c), dataset, c, batch_size=2, progress=False)
    # the reference: upsample the same way, count pixel by pixel
    up = F.interpolate(F.one_hot(pred_small, c).permute(0, 3, 1, 2).float(), size=(10, 12), mode="bilinear",
                       align_corners=False).argmax(1)
    cm = np.zeros((c, c), np.int64)
    for t, p in zip(target.flatten().tolist(), up.flatten().tolist()):
        if t != IGNORE:
            cm[t, p] += 1
    assert np.array_equal(scores["confusion"].numpy(), cm)
    iou = [cm[k, k] / (cm[k].sum() + cm[:, k].sum() - cm[k, k]) for k in range(c)]
    np.testing.assert_allclose(scores["iou"], iou)
    assert scores["iou"][3] == 0.0
    assert abs(scores["miou"] - np.mean(iou)) < 1e-12


def test_loop_on_real_camvid_frames(camvid_root, tmp_path):
    """The whole wiring on real data: reader -> augmentation -> loop -> val mIoU, a few steps."""
    from fastseg.data import CamVid
    from fastseg.training import eval_transform

    train_set = CamVid(camvid_root, "train", transform=train_transform((48, 64), scale=(0.25, 0.5)))
    val_set = CamVid(camvid_root, "val", transform=eval_transform())
    result = train(TinyNet(11), torch.utils.data.Subset(train_set, range(8)),
                   torch.utils.data.Subset(val_set, range(2)), epochs=1, num_classes=11, batch_size=4,
                   checkpoint_dir=tmp_path, progress=False, log=None)
    assert np.isfinite(result.history[0]["loss"]) and 0 <= result.best_miou <= 1
