// uint8 camera / decoder frames -> the network's normalised float32 input at another size, one pass:
// pixel-format conversion, antialiased bilinear resize and normalisation together.
#pragma once
#include <vector>

#include "common/buffer.h"

namespace fastseg::cpu {

// Pixel formats of the source (fastseg/segmenter/pixel_formats.py holds the Python side):
//   kRGB, kBGR: uint8 [N,3,H,W], any strides (an HWC frame is a permuted view); kBGR's channel 0 is blue.
//   kNV12:      uint8 [N,H*3/2,W]: H rows of Y, then H/2 rows of interleaved U,V (one pair per 2x2 pixels).
//   kYUYV:      uint8 [N,H,W,2]: per pixel (Y, U) at even x and (Y, V) at odd x (YUY2, 4:2:2).
// YUV is converted per source pixel, before any filtering: rgb = clamp(M (yuv - offset), 0, 255),
// `yuv` = 9 row-major entries of M then the 3 offsets (the caller picks BT.601 / BT.709, range);
// chroma is taken from the pixel's own 2x2 (NV12) or 2x1 (YUYV) block, without interpolation.
enum class PixelFormat : int { kRGB = 0, kBGR = 1, kNV12 = 2, kYUYV = 3 };

// dst[n,c,y,x] = resized(rgb)[n,c,y,x] * scale[c] - shift[c], dst float32 [N,3,h,w], any strides.
// The resize is PyTorch's F.interpolate(mode="bilinear", antialias=True, align_corners=False) for
// an explicit size: a triangle filter, widened by the ratio when shrinking (so every source pixel
// counts), plain bilinear when enlarging.
void resize_normalize(const Buffer& src, int format, const Buffer& dst, const std::vector<float>& scale,
                      const std::vector<float>& shift, const std::vector<float>& yuv, int num_threads,
                      bool own_threads);

}  // namespace fastseg::cpu
