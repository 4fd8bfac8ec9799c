"""The pixel formats frames arrive in, and how YUV becomes RGB.

    "rgb"   uint8 [H,W,3] / [N,H,W,3] (numpy), [3,H,W] / [N,3,H,W] (torch): what fastseg takes by default
    "bgr"   the same shapes, channels in blue, green, red order (OpenCV, most camera SDKs)
    "nv12"  uint8 [H*3/2,W] / [N,H*3/2,W]: H rows of luma, then H/2 rows of interleaved U,V, one
            pair per 2x2 pixels (4:2:0; hardware decoders, Jetson / V4L2 cameras)
    "yuyv"  uint8 [H,W,2] / [N,H,W,2]: (Y, U) at even x, (Y, V) at odd x (YUY2, 4:2:2; USB cameras,
            OpenCV with CAP_PROP_CONVERT_RGB off)

YUV is read as BT.601 limited range (Y in 16..235, chroma in 16..240: what SD and most USB cameras
send) unless the name says otherwise: "nv12:bt709" for HD sources that use BT.709, ":full" for full
range (JPEG-style 0..255 luma), e.g. "yuyv:bt709:full". Each pixel takes the chroma of its own 2x2
(NV12) or 2x1 (YUYV) block as is (no chroma interpolation), and RGB is clamped to 0..255 before any
resizing. Width and height must be even.
"""
from __future__ import annotations

from dataclasses import dataclass

NAMES = ("rgb", "bgr", "nv12", "yuyv")
CODES = {name: code for code, name in enumerate(NAMES)}  # fastseg._C's PixelFormat values
# (Kr, Kb): the luma weights of red and blue
MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


@dataclass(frozen=True)
class PixelFormat:
    name: str                 # one of NAMES
    matrix: str = "bt601"     # YUV formats: "bt601" or "bt709"
    full_range: bool = False  # YUV formats: luma 0..255 instead of 16..235

    @property
    def yuv(self) -> bool:
        return self.name in ("nv12", "yuyv")

    @property
    def code(self) -> int:
        return CODES[self.name]

    def coefficients(self) -> list[float]:
        """rgb = M (yuv - offset): the 9 entries of M (row-major) then the 3 offsets; [] for RGB / BGR."""
        if not self.yuv:
            return []
        kr, kb = MATRICES[self.matrix]
        kg = 1.0 - kr - kb
        ys, cs, y0 = (1.0, 1.0, 0.0) if self.full_range else (255.0 / 219.0, 255.0 / 224.0, 16.0)
        return [ys, 0.0, cs * 2 * (1 - kr),
                ys, -cs * 2 * kb * (1 - kb) / kg, -cs * 2 * kr * (1 - kr) / kg,
                ys, cs * 2 * (1 - kb), 0.0,
                y0, 128.0, 128.0]

    def image_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(H, W) of a batch [N,...] of frames in this format."""
        if self.name == "nv12":
            return shape[1] * 2 // 3, shape[2]
        if self.name == "yuyv":
            return shape[1], shape[2]
        return shape[2], shape[3]


def parse(value) -> PixelFormat:
    """A PixelFormat from its name ("nv12", "nv12:bt709:full", ...) or a PixelFormat."""
    if isinstance(value, PixelFormat):
        return value
    if not isinstance(value, str):
        raise TypeError(f"pixel_format: expected one of {', '.join(NAMES)}, got {type(value).__name__}")
    name, *options = value.lower().split(":")
    if name not in NAMES:
        raise ValueError(f"pixel_format: expected one of {', '.join(NAMES)} (YUV ones optionally with "
                         f"':bt709' and / or ':full'), got {value!r}")
    matrix, full = "bt601", False
    for option in options:
        if name not in ("nv12", "yuyv") or option not in ("bt601", "bt709", "full", "limited"):
            raise ValueError(f"pixel_format: {option!r} is not an option of {name!r} "
                             f"(YUV formats take bt601, bt709, limited, full), in {value!r}")
        if option in MATRICES:
            matrix = option
        else:
            full = option == "full"
    return PixelFormat(name, matrix, full)


RGB = PixelFormat("rgb")
