"""The size images run through the network at: the model's training size from its config, resized
inside the preprocessing pass, the logits upsampled straight to each image's own size; scale= and
size= override it. And the enlarged-CamVid-frame check: a 3840x2880 frame agrees with the native
frame's answer."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastseg
from fastseg.models.config import ConfigError
from fastseg.segmenter import Segmenter
from fastseg.segmenter.scale import Scaling, tail_size

from _images import agreement, image
from _zoo import Local, one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)


def expected_labels(model, img, size):
    """The specification: antialiased resize to `size` (F.interpolate), normalise, the network,
    bilinear upsample of the logits to the image's size, argmax."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True) if tuple(size) != x.shape[2:] else x
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model.forward_logits((x / 255 - mean) / std)
    return F.interpolate(logits, size=img.shape[:2], mode="bilinear").argmax(1)[0].numpy()


@pytest.mark.parametrize("hw, network", [((48, 64), (24, 32)), ((240, 320), (24, 32)), ((37, 101), (24, 66)),
                                         ((12, 16), (24, 32)), ((24, 32), (24, 32)), ((300, 17), (424, 24))])
def test_default_is_the_models_training_size(hw, network):
    model = Local()
    seg = Segmenter(model, runtime="torch")
    assert seg.scaling.network_size(*hw) == network
    img = image(*hw, seed=sum(hw))
    labels = seg.predict(img).labels
    assert labels.shape == hw
    assert agreement(labels, expected_labels(model, img, network)) >= 0.999


def test_overrides_and_unknown_training_size():
    img = image(60, 80, seed=1)
    model = Local()
    same = Segmenter(model, runtime="torch", scale=1).predict(img).labels
    assert agreement(same, expected_labels(model, img, (60, 80))) >= 0.999
    half = Segmenter(model, runtime="torch", scale=0.5).predict(img).labels
    assert agreement(half, expected_labels(model, img, (30, 40))) >= 0.999
    short = Segmenter(model, runtime="torch", size=45).predict(img).labels
    assert agreement(short, expected_labels(model, img, (45, 60))) >= 0.999
    exact = Segmenter(model, runtime="torch", size=(20, 50)).predict(img).labels
    assert agreement(exact, expected_labels(model, img, (20, 50))) >= 0.999
    unknown = Local()
    del unknown.config["input_size"]
    as_is = Segmenter(unknown, runtime="torch").predict(img).labels  # converted models: as today
    np.testing.assert_array_equal(as_is, same)


def test_batches_lists_and_streams_are_resized_per_image():
    model = Local()
    seg = Segmenter(model, runtime="torch")
    imgs = [image(48, 64, seed=2), image(90, 60, seed=3), image(48, 64, seed=4)]
    listed = seg.predict(imgs).labels
    for img, labels in zip(imgs, listed):
        assert labels.shape == img.shape[:2]
        np.testing.assert_array_equal(labels, seg.predict(img).labels)
    batch = seg.predict(np.stack([imgs[0], imgs[2]])).labels
    np.testing.assert_array_equal(batch[1], listed[2])
    streamed = [r.labels.copy() for r in seg.stream(imgs)]
    for a, b in zip(streamed, listed):
        np.testing.assert_array_equal(a, b)
    floats = torch.from_numpy(imgs[1]).permute(2, 0, 1).float() / 255  # torch float input resizes too
    assert agreement(seg.predict(floats).labels.numpy(), listed[1]) >= 0.999


def test_padding_to_the_stride_maps_the_logits_onto_the_image():
    """Padded (bottom / right) to a multiple of 8, the logits cover more than the resized image;
    stretched by the image's factor and cropped, they land on the image's pixels: the answer is the
    unpadded one but for the pixels next to the padding (a per-pixel model, 3x3 receptive field)."""
    model = Local(trained=(30, 42))
    img = image(90, 125, seed=5)
    padded = Segmenter(model, runtime="torch", pad_to=8).predict(img).labels
    assert padded.shape == img.shape[:2]
    assert agreement(padded, expected_labels(model, img, (30, 42))) >= 0.97
    assert tail_size((90, 125), (30, 42), (32, 44)) == (96, 131)
    assert tail_size((90, 125), (30, 42), (30, 42)) == (90, 125)


@pytest.mark.parametrize("kwargs, match", [
    (dict(scale=0), "scale: must be a positive number"), (dict(scale="2"), "scale"),
    (dict(scale=float("nan")), "scale"), (dict(size=0), "size: expected"), (dict(size=(3, 4, 5)), "size"),
    (dict(size=(3.5, 4)), "size"), (dict(scale=1, size=10), "give one of them"),
])
def test_bad_scale_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Segmenter(Local(), runtime="torch", **kwargs)


def test_scaling_rule():
    rule = Scaling(trained=(360, 480))
    assert rule.network_size(2880, 3840) == (360, 480)
    assert rule.network_size(3840, 2880) == (480, 360)      # portrait: the short side matches
    assert rule.network_size(1080, 1920) == (360, 640)
    assert rule.network_size(180, 240) == (360, 480)        # small images are enlarged towards it
    assert Scaling().network_size(1080, 1920) == (1080, 1920)


def test_config_carries_the_training_size(tmp_path):
    model = fastseg.models.create("unet_resnet18", num_classes=3, base_width=8, decoder_channels=(16, 8, 8, 8))
    model.config["input_size"] = [360, 480]
    path = tmp_path / "m.safetensors"
    fastseg.models.save(model, path)
    assert fastseg.models.input_size(fastseg.models.load(path)) == (360, 480)
    del model.config["input_size"]
    fastseg.models.save(model, path)
    assert fastseg.models.input_size(fastseg.models.load(path)) is None
    assert fastseg.models.input_size(fastseg.models.pretrained.load()) == (360, 480)  # the default model


@pytest.mark.parametrize("bad", [[360], [0, 480], [360, "480"], "360x480", [360, 480.0], [True, 2], [1 << 20, 4]])
def test_bad_training_size_in_a_file(tmp_path, bad):
    from fastseg.models.config import check_input_size

    with pytest.raises(ConfigError, match="input_size"):
        check_input_size({"input_size": bad}, "m.safetensors")


@pytest.mark.camvid
@pytest.mark.parametrize("noise", [0.0, 8.0])
@pytest.mark.parametrize("index", [0, 50])
def test_enlarged_camvid_frame_agrees_with_the_native_frame(camvid_root, noise, index):
    """A CamVid val frame enlarged 8x to 3840x2880 (and with noise added at that size): the default
    Segmenter's labels agree with the native frame's logits upsampled straight to 3840x2880 on at
    least 98.5 % of pixels (run at 3840x2880 as it is, under half agree)."""
    from fastseg.bench import scale_camvid

    seg = Segmenter()
    native, big = scale_camvid.frames(camvid_root, index, noise)
    result = scale_camvid.agreement(seg, native, big)
    assert result.value >= scale_camvid.AGREEMENT, result.text()


def test_evaluation_runs_images_at_the_segmenters_size():
    """fastseg.evaluation (fastseg eval) scores exactly the labels Segmenter.predict gives, scaled too."""
    from fastseg.evaluation import evaluate
    from fastseg.metrics import ConfusionMatrix

    class Frames:
        num_classes, ignore_index, classes = 5, 255, tuple("abcde")

        def __init__(self):
            self.items = [(image(60, 80, seed=i), (np.arange(60 * 80).reshape(60, 80) % 5).astype(np.uint8))
                          for i in range(3)]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    data = Frames()
    for seg in (Segmenter(Local(), runtime="torch"), Segmenter(Local(), runtime="torch", scale=0.5)):
        want = ConfusionMatrix(5, 255)
        for img, target in data.items:
            want.update(seg.predict(img).labels, target)
        got = evaluate(seg, data, batch_size=2, progress=False).plain
        assert torch.equal(got.matrix, want.matrix)
