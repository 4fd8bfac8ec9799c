"""Dataset readers: tiny fixtures in each dataset's real on-disk layout, and CamVid's real files."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastseg import data
from fastseg.data import ADE20K, CamVid, Cityscapes, COCOStuff, VOCSegmentation, get_dataset
from fastseg.data.cityscapes import LABEL_ID_TO_TRAIN_ID
from fastseg.data.cocostuff import RAW_VALUES

H, W = 6, 8


def save_image(path: Path, seed: int, size=(H, W)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return array


def save_label(path: Path, values: np.ndarray, palette: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.ascontiguousarray(values, dtype=np.uint8)
    if palette is None:
        im = Image.fromarray(values)  # 8-bit grey ("L")
    else:  # a palette PNG, as VOC ships them: pixel = index into the palette
        im = Image.frombytes("P", (values.shape[1], values.shape[0]), values.tobytes())
        im.putpalette(palette.astype(np.uint8).ravel().tolist())
    im.save(path)


def label_with(values, size=(H, W)) -> np.ndarray:
    """A label map holding each of values at least once (then repeating them)."""
    values = np.asarray(values)
    n = size[0] * size[1]
    if len(values) > n:
        raise ValueError("too many values for the fixture size")
    return np.resize(values, n).reshape(size)


def lut_apply(mapping: dict[int, int], raw: np.ndarray) -> np.ndarray:
    """Independent reference of the id mapping: a plain Python loop over pixels."""
    out = np.empty_like(raw)
    for idx, v in np.ndenumerate(raw):
        out[idx] = mapping.get(int(v), 255)
    return out


# ---- CamVid (SegNet layout) --------------------------------------------------------------------

def make_camvid(root: Path, names=("0001TP_000010", "0001TP_000020", "Seq05VD_f00030")) -> dict:
    raws = {}
    for split, count in (("train", 3), ("val", 2)):
        for i, name in enumerate(names[:count]):
            save_image(root / split / f"{name}.png", seed=10 * len(split) + i)
            raw = label_with(np.arange(12)[::-1] if i % 2 else np.arange(12))
            save_label(root / f"{split}annot" / f"{name}.png", raw)
            raws[(split, name)] = raw
    return raws


def test_camvid_reads_maps_and_orders(tmp_path):
    raws = make_camvid(tmp_path)
    ds = CamVid(tmp_path, "train")
    assert len(ds) == 3 and ds.num_classes == 11 and ds.classes[3] == "Road"
    assert [p.name for p, _ in ds.pairs] == sorted(p.name for p, _ in ds.pairs)
    for i, (image_path, label_path) in enumerate(ds.pairs):
        assert image_path.name == label_path.name
        image, label = ds[i]
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert np.array_equal(image, np.asarray(Image.open(image_path)))
        assert label.shape == (H, W) and label.dtype == np.uint8
        raw = raws[("train", image_path.stem)]
        assert np.array_equal(label, lut_apply({i: i for i in range(11)}, raw))
        assert (label[raw == 11] == 255).all() and set(np.unique(label)) == set(range(11)) | {255}
    assert len(CamVid(tmp_path, "val")) == 2


def test_camvid_test_split_only_when_present(tmp_path):
    make_camvid(tmp_path)
    with pytest.raises(FileNotFoundError, match="test"):
        CamVid(tmp_path, "test")
    save_image(tmp_path / "test" / "a.png", 1)
    save_label(tmp_path / "testannot" / "a.png", label_with([0, 11]))
    assert len(CamVid(tmp_path, "test")) == 1


def test_camvid_pairing_errors(tmp_path):
    make_camvid(tmp_path)
    save_image(tmp_path / "train" / "orphan.png", 7)
    with pytest.raises(ValueError, match="without a label.*orphan"):
        CamVid(tmp_path, "train")
    (tmp_path / "train" / "orphan.png").unlink()
    save_label(tmp_path / "valannot" / "stray.png", label_with([1]))
    with pytest.raises(ValueError, match="without an image.*stray"):
        CamVid(tmp_path, "val")


def test_missing_root_split_and_empty_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        CamVid(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match="CamVid train images"):
        CamVid(tmp_path, "train")
    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        CamVid(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        CamVid(tmp_path, "training")


def test_size_mismatch_and_wrong_label_mode(tmp_path):
    save_image(tmp_path / "train" / "a.png", 1)
    save_label(tmp_path / "trainannot" / "a.png", label_with([1], size=(H, W + 1)))
    save_image(tmp_path / "train" / "b.png", 2)
    save_image(tmp_path / "trainannot" / "b.png", 3)  # an RGB picture where a label belongs
    ds = CamVid(tmp_path, "train")
    with pytest.raises(ValueError, match=r"a\.png is 8x6 but its label .*a\.png is 9x6"):
        ds[0]
    with pytest.raises(ValueError, match="mode 'RGB'"):
        ds[1]
    with pytest.raises(IndexError):
        ds[2]


def test_transform_and_dataloader(tmp_path):
    from fastseg.training import eval_transform

    make_camvid(tmp_path)
    calls = []

    def transform(image, label):
        calls.append(1)
        return image[:2], label[:2]

    image, label = get_dataset("camvid", tmp_path, "train", transform=transform)[0]
    assert image.shape == (2, W, 3) and label.shape == (2, W) and calls
    ds = get_dataset("camvid", tmp_path, "train", transform=eval_transform())
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert x.shape == (3, 3, H, W) and x.dtype == torch.float32
    assert y.shape == (3, H, W) and y.dtype == torch.int64 and int(y.max()) == 255


# ---- Cityscapes ----------------------------------------------------------------------------------

def make_cityscapes(root: Path) -> dict:
    raws = {}
    frames = {"train": [("aachen", "000000_000019"), ("aachen", "000001_000019"), ("bremen", "000000_000019")],
              "val": [("frankfurt", "000000_000294")]}
    for split, items in frames.items():
        for i, (city, frame) in enumerate(items):
            stem = f"{city}_{frame}"
            save_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", seed=i)
            raw = label_with(np.arange(34)[(np.arange(34) * (i + 1)) % 34] if i else np.arange(34), size=(H, W))
            gt = root / "gtFine" / split / city
            save_label(gt / f"{stem}_gtFine_labelIds.png", raw)
            # the other files gtFine ships next to labelIds must be left alone
            save_label(gt / f"{stem}_gtFine_instanceIds.png", raw)
            save_image(gt / f"{stem}_gtFine_color.png", seed=9)
            (gt / f"{stem}_gtFine_polygons.json").write_text("{}")
            raws[(split, stem)] = raw
    return raws


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    raws = make_cityscapes(tmp_path)
    ds = Cityscapes(tmp_path, "train")
    assert len(ds) == 3 and ds.num_classes == 19
    assert [p.parent.name for p, _ in ds.pairs] == ["aachen", "aachen", "bremen"]
    for i, (image_path, label_path) in enumerate(ds.pairs):
        assert label_path.name.endswith("_gtFine_labelIds.png")
        stem = image_path.name[: -len("_leftImg8bit.png")]
        assert label_path.name == f"{stem}_gtFine_labelIds.png"
        image, label = ds[i]
        assert image.shape == (H, W, 3)
        assert np.array_equal(label, lut_apply(LABEL_ID_TO_TRAIN_ID, raws[("train", stem)]))
    # the official table: 19 ids in order, everything else (void, license plate ...) ignored
    assert sorted(LABEL_ID_TO_TRAIN_ID) == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    assert sorted(LABEL_ID_TO_TRAIN_ID.values()) == list(range(19))
    assert ds.classes[LABEL_ID_TO_TRAIN_ID[26]] == "car" and ds.classes[LABEL_ID_TO_TRAIN_ID[7]] == "road"
    assert tuple(ds.palette[0]) == (128, 64, 128) and tuple(ds.palette[13]) == (0, 0, 142)
    assert len(Cityscapes(tmp_path, "val")) == 1


def test_cityscapes_city_mismatch_is_a_pairing_error(tmp_path):
    make_cityscapes(tmp_path)
    moved = tmp_path / "gtFine" / "val" / "ulm" / "frankfurt_000000_000294_gtFine_labelIds.png"
    moved.parent.mkdir()
    (tmp_path / "gtFine" / "val" / "frankfurt" / moved.name).rename(moved)
    with pytest.raises(ValueError, match="do not pair"):
        Cityscapes(tmp_path, "val")


# ---- PASCAL VOC 2012 -----------------------------------------------------------------------------

def make_voc(root: Path, ids=("2007_000032", "2007_000039", "2008_000002")) -> dict:
    raws = {}
    for i, name in enumerate(ids):
        save_image(root / "JPEGImages" / f"{name}.jpg", seed=i)
        raw = label_with(list(range(21)) + [255, 255]) if i != 1 else label_with([0, 15, 255])
        save_label(root / "SegmentationClass" / f"{name}.png", raw, palette=VOCSegmentation.palette)
        raws[name] = raw
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text(f"{ids[2]}\n{ids[0]}\n")  # unsorted on purpose
    (lists / "val.txt").write_text(f"{ids[1]}\n")
    (lists / "trainval.txt").write_text("\n".join(ids) + "\n")
    return raws


def test_voc_reads_palette_pngs_as_class_ids(tmp_path):
    raws = make_voc(tmp_path / "VOC2012")
    for root in (tmp_path / "VOC2012", tmp_path):  # VOC2012 or the folder holding it
        ds = VOCSegmentation(root, "train")
        assert [p.stem for p, _ in ds.pairs] == ["2007_000032", "2008_000002"]
        assert ds.num_classes == 21 and ds.classes[15] == "person"
        for i, (image_path, _) in enumerate(ds.pairs):
            image, label = ds[i]
            assert image.shape == (H, W, 3)
            assert Image.open(ds.pairs[i][1]).mode == "P"
            assert np.array_equal(label, raws[image_path.stem])  # 0..20 and 255 kept as they are
    assert len(get_dataset("voc", tmp_path, "trainval")) == 3


def test_voc_palette_is_the_bit_pattern_palette():
    palette = VOCSegmentation.palette
    assert palette.shape == (21, 3) and palette.dtype == np.uint8
    assert tuple(palette[0]) == (0, 0, 0) and tuple(palette[1]) == (128, 0, 0)
    assert tuple(palette[15]) == (192, 128, 128) and tuple(palette[20]) == (0, 64, 128)
    assert tuple(data.bit_palette(256)[255]) == (224, 224, 192)  # VOC's boundary colour
    assert len({tuple(c) for c in data.bit_palette(256)}) == 256


def test_voc_missing_listed_file(tmp_path):
    make_voc(tmp_path)
    (tmp_path / "SegmentationClass" / "2007_000039.png").unlink()
    with pytest.raises(FileNotFoundError, match="2007_000039"):
        VOCSegmentation(tmp_path, "val")
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train.txt"):
        VOCSegmentation(tmp_path, "train")


# ---- ADE20K --------------------------------------------------------------------------------------

def make_ade(root: Path) -> dict:
    raws = {}
    for folder, prefix, count in (("training", "ADE_train", 2), ("validation", "ADE_val", 1)):
        for i in range(count):
            name = f"{prefix}_{i + 1:08d}"
            save_image(root / "images" / folder / f"{name}.jpg", seed=i)
            raw = label_with(np.arange(151)[i::4], size=(H, W)) if i else label_with([0, 1, 2, 75, 149, 150])
            save_label(root / "annotations" / folder / f"{name}.png", raw)
            raws[name] = raw
    return raws


def test_ade20k_shifts_ids_and_ignores_zero(tmp_path):
    raws = make_ade(tmp_path / "ADEChallengeData2016")
    for root in (tmp_path / "ADEChallengeData2016", tmp_path):
        ds = ADE20K(root, "train")
        assert len(ds) == 2 and ds.num_classes == 150 and ds.palette.shape == (150, 3)
        for i, (image_path, _) in enumerate(ds.pairs):
            _, label = ds[i]
            assert np.array_equal(label, lut_apply({r: r - 1 for r in range(1, 151)}, raws[image_path.stem]))
    first = ADE20K(tmp_path, "training")[0][1]
    assert set(np.unique(first)) == {255, 0, 1, 74, 148, 149}
    assert ADE20K.classes[0] == "wall" and ADE20K.classes[149] == "flag"
    assert tuple(ADE20K.palette[0]) == (120, 120, 120)
    assert len(get_dataset("ADE20K", tmp_path, "validation")) == 1


# ---- COCO-Stuff 164k -----------------------------------------------------------------------------

def make_coco(root: Path, label_dir="stuffthingmaps_trainval2017") -> np.ndarray:
    raw = label_with([0, 10, 11, 12, 25, 90, 91, 181, 255, 182, 200])
    for split in ("train2017", "val2017"):
        for i, name in enumerate(("000000000009", "000000000025")):
            save_image(root / "images" / split / f"{name}.jpg", seed=i)
            save_label(root / label_dir / split / f"{name}.png", raw)
    return raw


@pytest.mark.parametrize("label_dir", ["stuffthingmaps_trainval2017", "annotations"])
def test_cocostuff_maps_182_ids_to_171_classes(tmp_path, label_dir):
    raw = make_coco(tmp_path, label_dir)
    ds = COCOStuff(tmp_path, "val")
    assert len(ds) == 2 and ds.num_classes == 171
    _, label = ds[0]
    unused = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}  # thing ids COCO never annotated (0-based)
    mapping = {}
    for raw_value in range(182):
        if raw_value not in unused:
            mapping[raw_value] = len(mapping)
    assert np.array_equal(label, lut_apply(mapping, raw))
    assert tuple(RAW_VALUES) == tuple(sorted(mapping))
    assert ds.classes[mapping[0]] == "person" and ds.classes[mapping[91]] == "banner"
    assert ds.classes[mapping[181]] == "wood" and ds.classes[mapping[12]] == "stop sign"
    assert len({tuple(c) for c in ds.palette}) == 171


def test_cocostuff_missing_labels(tmp_path):
    save_image(tmp_path / "images" / "train2017" / "000000000009.jpg", 1)
    with pytest.raises(FileNotFoundError, match="stuffthingmaps_trainval2017"):
        COCOStuff(tmp_path, "train")


# ---- registry, palettes --------------------------------------------------------------------------

def test_registry_and_metadata(tmp_path):
    assert set(data.registry) == {"camvid", "cityscapes", "voc", "ade20k", "cocostuff"}
    expected = {"camvid": 11, "cityscapes": 19, "voc": 21, "ade20k": 150, "cocostuff": 171}
    for name, cls in data.registry.items():
        assert cls.name == name and len(cls.classes) == expected[name] == len(set(cls.classes))
        assert cls.palette.shape == (expected[name], 3) and cls.palette.dtype == np.uint8
        assert cls.label_map.shape == (256,) and cls.label_map[255] == 255
        mapped = set(cls.label_map.tolist()) - {255}
        assert mapped == set(range(expected[name]))  # every class reachable, ids contiguous
    with pytest.raises(KeyError, match="unknown dataset"):
        get_dataset("kitti", tmp_path)
    make_camvid(tmp_path)
    ds = get_dataset("CamVid", tmp_path, "val")
    picture = ds.colorize(ds[0][1])
    assert picture.shape == (H, W, 3)
    assert tuple(picture[ds[0][1] == 3][0]) == (128, 64, 128)  # Road
    assert (picture[ds[0][1] == 255] == 0).all()
    assert "CamVid" in repr(ds)


# ---- CamVid, the real files ----------------------------------------------------------------------

def readme_train_counts(root: Path) -> dict[int, int]:
    text = (root / "README.md").read_text()
    block = text[text.index("Pixel counts over train"):].split("\n\n")[0]
    return {int(k): int(v) for k, v in re.findall(r"(\d+): (\d+)", block)}


def test_camvid_real_files(camvid_root):
    train, val = CamVid(camvid_root, "train"), CamVid(camvid_root, "val")
    assert (len(train), len(val)) == (367, 101)
    for ds in (train, val):
        for i in (0, len(ds) // 2, len(ds) - 1):
            image, label = ds[i]
            assert image.shape == (360, 480, 3) and label.shape == (360, 480)
            assert set(np.unique(ds.read_raw_label(i))) <= set(range(12))
            assert set(np.unique(label)) <= set(range(11)) | {255}
        assert all(a.name == b.name for a, b in ds.pairs)


def test_camvid_real_class_frequencies_match_readme(camvid_root):
    """Raw pixel counts over all of train equal the README's; a subset has the same ranking of the
    big classes and a similar distribution."""
    from fastseg.training import label_statistics

    expected = readme_train_counts(camvid_root)
    assert sorted(expected) == list(range(12))
    train = CamVid(camvid_root, "train")
    counts = np.zeros(256, np.int64)
    for i in range(len(train)):
        counts += np.bincount(train.read_raw_label(i).ravel(), minlength=256)
    assert {k: int(counts[k]) for k in range(12)} == expected and counts[12:].sum() == 0

    subset = [train.read_label(i) for i in range(0, len(train), 10)]  # 37 frames
    sub_counts, _ = label_statistics(subset, 11)
    full = np.array([expected[k] for k in range(11)], dtype=np.float64)
    sub_freq, full_freq = sub_counts / sub_counts.sum(), full / full.sum()
    assert np.abs(sub_freq - full_freq).sum() < 0.1
    assert list(np.argsort(-sub_freq)[:3]) == list(np.argsort(-full_freq)[:3])  # road, building, sky
