"""Pictures of label maps: colours, overlays on the image, and captioned grids with a legend (PIL).

    color = colorize(labels, palette)                       # uint8 [H,W,3]; ignored pixels (255) dark grey
    blend = overlay(image, labels, palette, alpha=0.5)      # the colours over the photo
    picture = grid([[image, color, blend]], column_titles=["input", "prediction", "overlay"],
                   legend=legend_entries(classes, palette))
    picture.save("panel.png")

Arrays are numpy uint8 (images [H,W,3] RGB, labels [H,W] of class ids); torch tensors are accepted
too. Pictures are PIL images, so they save to any format PIL writes. Matplotlib is not needed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

IGNORE_INDEX = 255
# Not black: black is a class colour in several palettes (VOC's background, ADE20K's "other").
IGNORE_COLOR = (40, 40, 40)

__all__ = ["IGNORE_COLOR", "colorize", "overlay", "boundaries", "outline", "zoom", "default_palette", "legend_entries",
           "grid", "draw_box"]


def _numpy(x) -> np.ndarray:
    if isinstance(x, Image.Image):
        return np.asarray(x.convert("RGB"))
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def default_palette(num_classes: int) -> np.ndarray:
    """Colours for a model whose dataset is unknown: PASCAL VOC's bit-spread palette (neighbouring ids
    differ clearly), uint8 [num_classes, 3]."""
    from .data.base import bit_palette

    return bit_palette(num_classes)


def colorize(labels, palette, ignore_index: int = IGNORE_INDEX, ignore_color=IGNORE_COLOR) -> np.ndarray:
    """uint8 [H,W,3]: palette[label] per pixel, ignore_color where the label is ignore_index."""
    labels = _numpy(labels)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if labels.ndim != 2:
        raise ValueError(f"labels: expected [H,W] class ids, got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels: expected integer class ids, got dtype {labels.dtype}")
    known = labels[labels != ignore_index]
    if known.size and (known.min() < 0 or known.max() >= len(palette)):
        raise ValueError(f"labels: class ids {int(known.min())}..{int(known.max())} do not fit a palette of "
                         f"{len(palette)} colours (ignore_index {ignore_index} excepted)")
    size = max(len(palette), ignore_index + 1 if ignore_index >= 0 else 0, 1)
    table = np.zeros((size, 3), dtype=np.uint8)
    table[: len(palette)] = palette
    if ignore_index >= 0:
        table[ignore_index] = ignore_color
    return table[labels.astype(np.intp)]


def overlay(image, labels, palette, alpha: float = 0.5, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """The label colours blended over the image: (1 - alpha) * image + alpha * colour, uint8 [H,W,3].
    Ignored pixels show the image unchanged."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha!r}")
    image = _numpy(image)
    labels = _numpy(labels)
    if image.shape[:2] != labels.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"overlay: image {image.shape} and labels {labels.shape} must be [H,W,3] and [H,W]")
    color = colorize(labels, palette, ignore_index).astype(np.float32)
    out = image.astype(np.float32)
    blend = (1 - alpha) * out + alpha * color
    keep = labels == ignore_index
    blend[keep] = out[keep]
    return np.rint(blend).astype(np.uint8)


def boundaries(labels) -> np.ndarray:
    """bool [H,W]: pixels whose right or lower neighbour has another label (a one-pixel outline)."""
    labels = _numpy(labels)
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def outline(image, labels, color=(255, 255, 255)) -> np.ndarray:
    """The image with the boundaries between label regions drawn over it in `color` (one pixel wide),
    uint8 [H,W,3]: shows whether a prediction's edges sit on the image's edges."""
    out = _numpy(image).copy()
    out[boundaries(labels)] = color
    return out


def zoom(array, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (pixels stay visible as pixels)."""
    array = _numpy(array)
    return array.repeat(factor, axis=0).repeat(factor, axis=1)


def legend_entries(classes: Sequence[str], palette, ignored: str | None = None) -> list[tuple[str, tuple]]:
    """(name, colour) pairs for `grid(legend=...)`; `ignored` names the ignore colour's swatch."""
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(classes) != len(palette):
        raise ValueError(f"legend: {len(classes)} class names for {len(palette)} colours")
    entries = [(str(name), tuple(int(v) for v in rgb)) for name, rgb in zip(classes, palette)]
    if ignored:
        entries.append((ignored, IGNORE_COLOR))
    return entries


# ----------------------------------------------------------------------------- composing pictures
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
    return math.ceil(right), math.ceil(bottom)


def draw_box(picture: Image.Image, box: tuple[int, int, int, int], color=(255, 40, 40), width: int = 3) -> None:
    """Outline (left, top, right, bottom) on picture, in place (e.g. where a crop came from)."""
    ImageDraw.Draw(picture).rectangle(box, outline=tuple(color), width=width)


def _caption(cell: Image.Image, text: str, font) -> None:
    """White text on a dark band in the cell's top-left corner, in place."""
    draw = ImageDraw.Draw(cell, "RGBA")
    w, h = _text_size(draw, text, font)
    draw.rectangle((0, 0, w + 8, h + 6), fill=(0, 0, 0, 170))
    draw.multiline_text((4, 2), text, fill=(255, 255, 255), font=font)


def _legend(entries, width: int, font, pad: int) -> Image.Image:
    """Swatches with names, wrapped into rows that fit `width`."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    swatch = max(12, _text_size(probe, "Hg", font)[1])
    items = [(name, color, swatch + 6 + _text_size(probe, name, font)[0]) for name, color in entries]
    rows: list[list[tuple]] = []
    row: list[tuple] = []
    used = 0
    for item in items:
        if row and used + item[2] > width - 2 * pad:
            rows.append(row)
            row, used = [], 0
        row.append(item)
        used += item[2] + 3 * pad
    rows.append(row)
    line = swatch + pad
    picture = Image.new("RGB", (width, len(rows) * line + pad), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    for r, row in enumerate(rows):
        x, y = pad, pad + r * line
        for name, color, w in row:
            draw.rectangle((x, y, x + swatch, y + swatch), fill=tuple(color), outline=(0, 0, 0))
            draw.text((x + swatch + 6, y + swatch // 2), name, fill=(0, 0, 0), font=font, anchor="lm")
            x += w + 3 * pad
    return picture


def grid(cells: Sequence[Sequence], *, column_titles: Sequence[str] | None = None,
         captions: Sequence[Sequence[str | None]] | None = None, title: str | None = None,
         legend: Sequence[tuple[str, tuple]] | None = None, gap: int = 4, font_size: int = 16) -> Image.Image:
    """Pictures in rows and columns on a white sheet.

    cells: rows of images (uint8 [H,W,3] arrays or PIL images; None leaves a cell empty); a column is
        as wide as its widest cell, a row as tall as its tallest. column_titles: one per column, above.
    captions: per cell (same nesting as cells) a short text drawn on the picture's top-left corner.
    title: text (may span lines) above everything. legend: (name, colour) pairs drawn below.
    """
    if not cells or not any(len(row) for row in cells):
        raise ValueError("grid: no pictures")
    ncols = max(len(row) for row in cells)
    pictures = [[None if c is None else Image.fromarray(_numpy(c).astype(np.uint8)).convert("RGB")
                 for c in row] + [None] * (ncols - len(row)) for row in cells]
    widths = [max((p.width for p in col if p is not None), default=0) for col in zip(*pictures)]
    heights = [max((p.height for p in row if p is not None), default=0) for row in pictures]
    font = _font(font_size)
    title_font = _font(font_size + 2)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    body_w = sum(widths) + gap * (ncols + 1)

    title_h = _text_size(probe, title, title_font)[1] + 2 * gap + 4 if title else 0
    col_h = _text_size(probe, "Hg", font)[1] + 2 * gap if column_titles else 0
    legend_img = _legend(legend, body_w, font, gap + 2) if legend else None
    total_h = title_h + col_h + sum(heights) + gap * (len(heights) + 1) + (legend_img.height if legend_img else 0)
    width = max(body_w, (_text_size(probe, title, title_font)[0] + 2 * gap) if title else 0)
    sheet = Image.new("RGB", (width, total_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.multiline_text((gap, gap), title, fill=(0, 0, 0), font=title_font, spacing=4)
    y = title_h
    if column_titles:
        x = gap
        for text, w in zip(column_titles, widths):
            draw.text((x + w // 2, y + col_h // 2), text, fill=(0, 0, 0), font=font, anchor="mm")
            x += w + gap
        y += col_h
    y += gap
    for r, (row, h) in enumerate(zip(pictures, heights)):
        x = gap
        for c, (picture, w) in enumerate(zip(row, widths)):
            if picture is not None:
                caption = captions[r][c] if captions and r < len(captions) and c < len(captions[r]) else None
                if caption:
                    picture = picture.copy()
                    _caption(picture, caption, font)
                sheet.paste(picture, (x, y))
            x += w + gap
        y += h + gap
    if legend_img:
        sheet.paste(legend_img, (0, y))
    return sheet
