"""`fastseg predict`: segment image files into label PNGs, colourised masks and overlays.

    fastseg predict photos/ frames/*.jpg one.png --out seg/ [--recursive] [--save labels,color,overlay]

For an input image with output key K (its path relative to the inputs' common folder, without the
suffix; see _inputs.py) it writes
    OUT/labels/K.png    class ids as a palette PNG: its pixel values are the ids, viewers show colours
                        (16-bit greyscale when a model has more than 256 classes)
    OUT/color/K.png     the class colours
    OUT/overlay/K.png   the colours blended over the image (--alpha)
Resumable: an image whose requested outputs all exist is skipped, so an interrupted run continues
where it stopped when the same command is run again; every file is written atomically (a temporary
file in the same folder, then os.replace), so an output that exists is complete. An image that
cannot be read or segmented is reported and skipped; the exit status is 1 when anything failed
(130 when interrupted), 0 otherwise. With --ray [ADDRESS] a pool of Ray actors does the same work
(fastseg/distributed/ray_predict.py).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from .._atomic import atomic_write, remove_stale_temporaries
from . import _inputs, _predict_video
from ._model import add_model_arguments, choose_model
from ._ray_options import add_ray_arguments, ray_misuse
from ._scale import add_scale_arguments, scale_options

KINDS = ("labels", "color", "overlay")
# fastseg.segmenter.choice.RUNTIMES (not imported here: it imports torch, and --help should be quick)
RUNTIMES = ("auto", "torch", "inductor", "onnxruntime", "openvino")


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image or video files, folders, or glob patterns")
    parser.add_argument("--live", metavar="SOURCE", default=None,
                        help="segment a live source instead: a camera (0, /dev/video0), a stream URL (rtsp://, "
                             "http://) or a video file played at its own frame rate; always the newest frame "
                             "(default: none, the INPUTs)")
    parser.add_argument("--out", "-o", required=True, type=_output,
                        help="output folder (with --ray also a URL pyarrow writes: s3://, gs://, ...)")
    parser.add_argument("--recursive", "-r", action="store_true", help="also the images in sub-folders of folders")
    parser.add_argument("--save", default="labels,color,overlay", type=_kinds,
                        help="which outputs, comma-separated, of: labels, color, overlay (default: all three)")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the colours in the overlay")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    add_model_arguments(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16", "int8", "auto"),
                        help="the network's arithmetic (default: fp32); fp16 / bf16 need hardware that runs them "
                             "natively; int8: the packaged model's int8 graph, or --model FILE written by fastseg "
                             "quantize; auto: bf16 where measured faster (fastseg.segmenter.precision)")
    parser.add_argument("--allow-emulated-precision", action="store_true",
                        help="run fp16 / bf16 even where it is emulated (far slower than fp32; for testing)")
    parser.add_argument("--runtime", default="auto", choices=RUNTIMES,
                        help="what runs the network (default: auto, which fastseg.segmenter.choice decides)")
    parser.add_argument("--batch-size", type=_positive, default=1, help="images per forward pass (default: 1)")
    add_scale_arguments(parser)
    parser.add_argument("--crf", action="store_true", help="refine with the dense CRF (fastseg.crf.DenseCRF)")
    parser.add_argument("--tta-flip", action="store_true", help="average with the mirrored image's prediction")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    add_ray_arguments(parser)


def _output(text: str) -> Path | str:
    """A folder, or a URL kept as written (a Path would fold its '//')."""
    return text if "://" in text else Path(text)


def _positive(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _kinds(text: str) -> tuple[str, ...]:
    import argparse

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(KINDS)}, got {text!r}")
    return tuple(dict.fromkeys(kinds))


def output_paths(out: Path, key: str, kinds, path: Path | None = None) -> dict[str, Path]:
    """The outputs of the input `path` (an image's PNGs, or a video's videos) under key K."""
    if path is not None and _predict_video.is_video(path):
        return _predict_video.output_paths(out, key, kinds)
    return {kind: out / kind / f"{key}.png" for kind in kinds}


def read_image(path: Path) -> np.ndarray:
    """uint8 [H,W,3] RGB, turned upright as its EXIF orientation says (as viewers show it)."""
    with Image.open(path) as im:
        return np.array(ImageOps.exif_transpose(im).convert("RGB"))


def labels_picture(labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    """Class ids as an image whose pixel values are the ids: a palette PNG for up to 256 classes."""
    if labels.dtype == np.uint8:
        picture = Image.fromarray(labels)
        table = np.zeros((256, 3), np.uint8)
        table[: len(palette)] = palette[:256]
        picture.putpalette(table.tobytes())
        return picture
    return Image.fromarray(labels.astype(np.uint16))  # 16-bit greyscale


def write_outputs(paths: dict[str, Path], image: np.ndarray, labels: np.ndarray, palette: np.ndarray,
                  alpha: float) -> None:
    for kind, path in paths.items():
        with atomic_write(path) as f:
            picture(kind, image, labels, palette, alpha).save(f, format="PNG")


def picture(kind: str, image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float) -> Image.Image:
    """The output `kind` (labels, color or overlay) of one image, as a picture to save as PNG."""
    from ..viz import colorize, overlay

    if kind == "labels":
        return labels_picture(labels, palette)
    if kind == "color":
        return Image.fromarray(colorize(labels, palette))
    return Image.fromarray(overlay(image, labels, palette, alpha))


def run(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if not 0 <= args.alpha <= 1:
        print("fastseg predict: --alpha must be in [0, 1]", file=sys.stderr)
        return 2
    if (args.live is None) == (not args.inputs):
        print("fastseg predict: give INPUT files or --live SOURCE (one of the two)", file=sys.stderr)
        return 2
    if ray_misuse(args):
        print(f"fastseg predict: {ray_misuse(args)}", file=sys.stderr)
        return 2
    if args.live is not None and getattr(args, "ray", None) is not None:
        print("fastseg predict: --live runs in this process, not with --ray", file=sys.stderr)
        return 2
    if args.live is not None:
        from ._predict_live import run_live

        made = _segmenter(args)
        return 2 if made is None else run_live(args, made[1], made[0].palette)
    if getattr(args, "ray", None) is not None:
        from ..distributed.ray_predict import run as run_on_ray

        return run_on_ray(args)
    if any("://" in str(a) for a in (args.out, *args.inputs)):
        print("fastseg predict: URLs (s3://, gs://, ...) as INPUT or --out need --ray", file=sys.stderr)
        return 2
    planned = plan(args)
    if isinstance(planned, int):
        return planned
    found, todo, done_before = planned

    made = _segmenter(args)
    if made is None:
        return 2
    chosen, seg = made

    failed: list[tuple[Path, str]] = []
    finished, interrupted = 0, False
    started = time.perf_counter()
    with tqdm(total=len(todo), unit="image", desc="predict", file=sys.stderr) as bar:
        try:
            for first in range(0, len(todo), args.batch_size):
                batch = todo[first:first + args.batch_size]
                for source, error in zip(batch, _segment_batch(batch, seg, chosen.palette, args)):
                    if error is None:
                        finished += 1
                    else:
                        failed.append((source.path, error))
                        bar.write(f"failed: {source.path}: {error}", file=sys.stderr)
                bar.update(len(batch))
        except KeyboardInterrupt:
            interrupted = True
    _summary(finished, done_before, failed, found.missing, time.perf_counter() - started)
    if interrupted:
        print("interrupted: run the same command again to finish (finished images are skipped)", file=sys.stderr)
        return 130
    return 1 if failed or found.missing else 0


def plan(args, find=None, finished=None):
    """The inputs, the images still to do and how many were done before, after saying so; or the
    exit status when there is nothing to do or the outputs cannot be written. find() lists the inputs
    and finished(sources) says whether each has all its outputs (default: local files; `--ray` passes
    its own for URLs)."""
    try:
        found = find() if find else _inputs.find_inputs(args.inputs, args.recursive, exclude=args.out)
    except (OSError, ValueError) as exc:
        print(f"fastseg predict: {exc}", file=sys.stderr)
        return 2
    for arg in found.missing:
        print(f"fastseg predict: {arg}: no such file, folder, or matching image", file=sys.stderr)
    if not found.sources:
        print("fastseg predict: no images to segment", file=sys.stderr)
        return 1

    done = finished(found.sources) if finished else \
        [all(p.exists() for p in output_paths(args.out, s.key, args.save, s.path).values()) for s in found.sources]
    todo = [s for s, d in zip(found.sources, done) if args.overwrite or not d]
    done_before = len(found.sources) - len(todo)
    print(f"fastseg predict: {_count(len(found.sources), 'image')} -> {args.out}/{{{','.join(args.save)}}}/"
          + (f"; {done_before} already done, skipped" if done_before else "")
          + (f"; {_count(found.ignored, 'non-image file')} ignored" if found.ignored else ""))
    if not todo:
        return 1 if found.missing else 0
    if not isinstance(args.out, Path):  # a URL: an object store has no folders to check, no temporaries
        return found, todo, done_before
    problem = _check_writable(args.out, args.save)
    if problem:  # before the model loads and the first image is segmented, not after
        print(f"fastseg predict: --out: {problem}", file=sys.stderr)
        return 2
    stale = remove_stale_temporaries(args.out)
    if stale:
        print(f"fastseg predict: removed {_count(stale, 'temporary file')} that an interrupted run left behind")
    return found, todo, done_before


def _segmenter(args):
    """(the chosen model, its Segmenter) for the command line's options, or None after saying why not."""
    from ..segmenter import TTA, Segmenter
    from ..segmenter.choice import check_precision
    from ..segmenter.input_checks import check_device

    try:
        if args.precision in ("fp16", "bf16"):
            # checked first, so that the message names this command's option, not the Python argument
            check_precision(args.precision, check_device(args.device), args.allow_emulated_precision,
                            "--allow-emulated-precision")
        chosen = choose_model(args.model, args.num_classes, args.dataset)
        # int8 runs a quantized graph: the packaged model's, found by its name, or an int8 file
        seg = Segmenter(args.model if args.precision == "int8" else chosen.model, device=args.device,
                        precision=args.precision,
                        crf=chosen.make_crf() if args.crf else None,
                        tta=TTA(flip=True) if args.tta_flip else None, runtime=args.runtime,
                        allow_emulated_precision=args.allow_emulated_precision,
                        # a live source's decoder and the video writers share the cores with the network:
                        # ONNX Runtime's spinning workers would take their time (fastseg.segmenter.stream)
                        ort_spinning=args.live is None, **scale_options(args))
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"fastseg predict: {exc}", file=sys.stderr)
        return None
    print(chosen.summary())
    return chosen, seg


def _check_writable(out: Path, kinds) -> str | None:
    """Why the outputs cannot be written under out (None when they can): each kind's folder is
    made, and a file is created in it and removed."""
    for kind in kinds:
        folder = out / kind
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(folder / ".fastseg-write-check") as f:
                f.write(b"")
            (folder / ".fastseg-write-check").unlink()
        except OSError as exc:
            return f"cannot write to {folder}: {exc.strerror or exc}"
    return None


def _segment_batch(sources: list[_inputs.Source], seg, palette: np.ndarray, args) -> list[str | None]:
    """Read, segment (in one call) and write some images, and each video on its own; per input the
    reason it failed, or None. A failure of one input must not stop the others, so any error is
    caught here (KeyboardInterrupt is not an Exception); when the batch's call fails, its images are
    retried one by one."""
    errors: list[str | None] = [None] * len(sources)
    images = {}
    for i, source in enumerate(sources):
        if _predict_video.is_video(source.path):
            paths = output_paths(args.out, source.key, args.save, source.path)
            try:
                errors[i] = _predict_video.segment_video(source.path, paths, seg, palette, args.alpha)
            except Exception as exc:
                errors[i] = f"{type(exc).__name__}: {exc}"
            continue
        try:
            images[i] = read_image(source.path)
        except Exception as exc:  # corrupt, truncated, not an image, unreadable
            errors[i] = f"cannot read the image: {exc}"
    try:
        labels = dict(zip(images, seg.predict(list(images.values())).labels)) if len(images) > 1 else {}
    except Exception:
        labels = {}
    for i, image in images.items():
        try:
            result = labels[i] if i in labels else seg.predict(image).labels
            write_outputs(output_paths(args.out, sources[i].key, args.save, sources[i].path), image, result,
                          palette, args.alpha)
        except Exception as exc:
            errors[i] = f"{type(exc).__name__}: {exc}"
    return errors


def _summary(finished: int, skipped: int, failed, missing, seconds: float) -> None:
    rate = f" ({seconds / finished:.2f} s per image)" if finished else ""
    print(f"done: {finished} segmented{rate}, {skipped} skipped (already done), {len(failed)} failed"
          + (f", {_count(len(missing), 'input')} not found" if missing else ""))
    for path, reason in failed:
        print(f"  failed: {path}: {reason}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
