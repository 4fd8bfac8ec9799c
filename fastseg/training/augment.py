"""Joint image/label augmentation for training, and the matching evaluation transform.

Each transform is a callable ``(image, label) -> (image, label)`` on a uint8 [H, W, 3] RGB numpy
image and a uint8 [H, W] label of train ids; ``ToTensor`` ends a pipeline with a normalised float32
[3, H, W] tensor and an int64 [H, W] label tensor, ready for the default DataLoader collate.

Geometry moves image and label together (bilinear for the image, nearest for the label, so no new
label values appear); colour changes touch the image only. Randomness comes from torch's generator
(the global one unless ``generator=`` is given), which DataLoader seeds per worker and the training
loop reseeds per epoch, so runs and resumed runs repeat exactly.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform in [0, high]."""
    return int(torch.randint(high + 1, (), generator=generator).item())


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {size}")
    return int(h), int(w)


class Compose:
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, label):
        for t in self.transforms:
            image, label = t(image, label)
        return image, label

    def __repr__(self):
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class RandomScale:
    """Resize both by one factor drawn uniformly from [low, high] (image bilinear, label nearest)."""

    def __init__(self, low: float = 0.5, high: float = 2.0, generator: torch.Generator | None = None):
        if not 0 < low <= high:
            raise ValueError(f"need 0 < low <= high, got low={low}, high={high}")
        self.low, self.high, self.generator = low, high, generator

    def __call__(self, image, label):
        scale = _uniform(self.low, self.high, self.generator)
        h, w = label.shape
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL takes (width, height)
        image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.BILINEAR))
        label = np.asarray(Image.fromarray(np.ascontiguousarray(label)).resize(size, Image.NEAREST))
        return image, label

    def __repr__(self):
        return f"RandomScale({self.low}, {self.high})"


class RandomCrop:
    """Crop a random window of size (h, w); smaller inputs are padded first (bottom/right).

    The label is padded with ignore_index so padding never counts; the image with fill
    (default: the ImageNet mean colour, which normalises to zero).
    """

    def __init__(self, size: int | Sequence[int], ignore_index: int = IGNORE_INDEX,
                 fill: Sequence[int] = (124, 116, 104), generator: torch.Generator | None = None):
        self.size = _pair(size, "crop size")
        self.ignore_index, self.fill, self.generator = ignore_index, tuple(fill), generator

    def __call__(self, image, label):
        ch, cw = self.size
        h, w = label.shape
        if h < ch or w < cw:
            ph, pw = max(ch - h, 0), max(cw - w, 0)
            padded = np.empty((h + ph, w + pw, 3), dtype=image.dtype)
            padded[:] = np.asarray(self.fill, dtype=image.dtype)
            padded[:h, :w] = image
            image = padded
            label = np.pad(label, ((0, ph), (0, pw)), constant_values=self.ignore_index)
            h, w = label.shape
        top, left = _randint(h - ch, self.generator), _randint(w - cw, self.generator)
        return image[top:top + ch, left:left + cw], label[top:top + ch, left:left + cw]

    def __repr__(self):
        return f"RandomCrop({self.size})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        self.p, self.generator = p, generator

    def __call__(self, image, label):
        if _uniform(0.0, 1.0, self.generator) < self.p:
            return image[:, ::-1], label[:, ::-1]
        return image, label

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Random brightness, contrast and saturation factors in [1-x, 1+x], and a hue shift in
    [-hue, hue] (fraction of the colour circle), applied in random order to the image only."""

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3,
                 hue: float = 0.0, generator: torch.Generator | None = None):
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.generator = generator

    def _hue(self, im: Image.Image, shift: float) -> Image.Image:
        h, s, v = im.convert("HSV").split()
        h = Image.fromarray((np.asarray(h).astype(np.int16) + round(shift * 255)).astype(np.uint8))
        return Image.merge("HSV", (h, s, v)).convert("RGB")

    def __call__(self, image, label):
        im = Image.fromarray(np.ascontiguousarray(image))
        ops = []
        for amount, enhancer in ((self.brightness, ImageEnhance.Brightness),
                                 (self.contrast, ImageEnhance.Contrast),
                                 (self.saturation, ImageEnhance.Color)):
            if amount > 0:
                factor = _uniform(max(0.0, 1 - amount), 1 + amount, self.generator)
                ops.append(lambda im, e=enhancer, f=factor: e(im).enhance(f))
        if self.hue > 0:
            shift = _uniform(-self.hue, self.hue, self.generator)
            ops.append(lambda im, s=shift: self._hue(im, s))
        for i in torch.randperm(len(ops), generator=self.generator).tolist():
            im = ops[i](im)
        return np.asarray(im), label

    def __repr__(self):
        return f"ColorJitter({self.brightness}, {self.contrast}, {self.saturation}, {self.hue})"


class CameraJitter:
    """What changes between cameras and drives rather than between scenes, on the image only: the
    exposure curve (a gamma drawn from [1/gamma, gamma]), the white balance (each channel's gain
    drawn from [1-balance, 1+balance]), focus (a Gaussian blur of sigma drawn from [0.1, blur],
    half the time) and sensor noise (Gaussian, sigma drawn from [0, noise] grey levels).
    Colour jitter moves brightness, contrast and saturation; this moves the rest."""

    def __init__(self, gamma: float = 1.4, balance: float = 0.1, blur: float = 1.2, noise: float = 4.0,
                 generator: torch.Generator | None = None):
        if gamma < 1 or not 0 <= balance < 1 or blur < 0 or noise < 0:
            raise ValueError(f"need gamma >= 1, 0 <= balance < 1, blur >= 0, noise >= 0; got gamma={gamma}, "
                             f"balance={balance}, blur={blur}, noise={noise}")
        self.gamma, self.balance, self.blur, self.noise, self.generator = gamma, balance, blur, noise, generator

    def __call__(self, image, label):
        g = self.generator
        gamma = float(np.exp(_uniform(-np.log(self.gamma), np.log(self.gamma), g)))
        gains = np.array([_uniform(1 - self.balance, 1 + self.balance, g) for _ in range(3)], dtype=np.float32)
        sigma = _uniform(0.1, self.blur, g) if self.blur > 0 and _uniform(0.0, 1.0, g) < 0.5 else 0.0
        noise = _uniform(0.0, self.noise, g)
        x = (image.astype(np.float32) / 255) ** gamma * gains * 255
        if noise > 0:
            x += noise * torch.randn(x.shape, generator=g).numpy()
        out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
        if sigma > 0:
            out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(sigma)))
        return out, label

    def __repr__(self):
        return f"CameraJitter(gamma={self.gamma}, balance={self.balance}, blur={self.blur}, noise={self.noise})"


class PasteClasses:
    """Class-mix paste (after ClassMix, Olsson et al. 2021): with probability p, the pixels that
    `classes` cover in another frame (drawn from `frames`, mirrored half the time) replace the same
    pixels of this one, image and label together. Rare objects (pedestrians, cyclists) then appear
    on more streets, in front of more backgrounds. It goes first, on frames at their own size;
    frames of another size than the drawn one are left as they are.

    frames: (uint8 [H, W, 3] image, uint8 [H, W] label) pairs, e.g. a dataset's decoded frames;
    only those where at least one of `classes` appears are drawn from.
    """

    def __init__(self, frames: Sequence[tuple[np.ndarray, np.ndarray]], classes: Sequence[int], p: float = 0.5,
                 generator: torch.Generator | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.classes = np.asarray(sorted(set(int(c) for c in classes)), dtype=np.int64)
        if not len(self.classes):
            raise ValueError("PasteClasses needs at least one class")
        self.sources = [(image, label) for image, label in frames if np.isin(label, self.classes).any()]
        if not self.sources:
            raise ValueError(f"no frame holds any of the classes {self.classes.tolist()}: nothing to paste")
        self.p, self.generator = p, generator

    def __call__(self, image, label):
        if _uniform(0.0, 1.0, self.generator) >= self.p:
            return image, label
        source_image, source_label = self.sources[_randint(len(self.sources) - 1, self.generator)]
        if _uniform(0.0, 1.0, self.generator) < 0.5:
            source_image, source_label = source_image[:, ::-1], source_label[:, ::-1]
        if source_label.shape != label.shape:
            return image, label
        mask = np.isin(source_label, self.classes)
        image, label = image.copy(), label.copy()
        image[mask] = source_image[mask]
        label[mask] = source_label[mask]
        return image, label

    def __repr__(self):
        return f"PasteClasses({self.classes.tolist()}, p={self.p}, {len(self.sources)} frames)"


class ToTensor:
    """uint8 HWC image -> float32 [3, H, W] normalised by mean/std (0..1 scale); label -> int64 [H, W]."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image, label):
        # astype copies, so read-only inputs (np.asarray of a PIL image) are fine
        x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).div_(255)
        x = ((x - self.mean) / self.std).contiguous()
        y = torch.from_numpy(label.astype(np.int64))
        return x, y

    def __repr__(self):
        return "ToTensor()"


def train_transform(crop_size: int | Sequence[int], scale: tuple[float, float] = (0.5, 2.0),
                    flip: float = 0.5, jitter: float = 0.3, hue: float = 0.0, camera: bool = False,
                    ignore_index: int = IGNORE_INDEX, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    generator: torch.Generator | None = None) -> Compose:
    """The usual pipeline: random scale, padded random crop, flip, colour jitter, normalise; camera:
    CameraJitter (its defaults) after the colour jitter."""
    steps: list[Callable] = [RandomScale(*scale, generator=generator),
                             RandomCrop(crop_size, ignore_index, generator=generator)]
    if flip > 0:
        steps.append(RandomHorizontalFlip(flip, generator=generator))
    if jitter > 0 or hue > 0:
        steps.append(ColorJitter(jitter, jitter, jitter, hue, generator=generator))
    if camera:
        steps.append(CameraJitter(generator=generator))
    steps.append(ToTensor(mean, std))
    return Compose(steps)


def eval_transform(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Compose:
    """No augmentation: normalise only (full-size images and labels)."""
    return Compose([ToTensor(mean, std)])
