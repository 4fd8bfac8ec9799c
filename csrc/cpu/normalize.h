// uint8 images -> normalised float32, the Segmenter's preprocessing in one pass.
#pragma once
#include <vector>

#include "common/buffer.h"

namespace fastseg::cpu {

// dst[n,c,y,x] = src[n,c,y,x] * scale[c] - shift[c] (one rounding: a fused multiply-add).
// src: uint8 [N,C,H,W] and dst: float32 [N,C,H,W], any strides (an HWC image is a permuted view;
// dst is NCHW or channels_last). own_threads: see common/threads.h.
void normalize_image(const Buffer& src, const Buffer& dst, const std::vector<float>& scale,
                     const std::vector<float>& shift, int num_threads, bool own_threads);

}  // namespace fastseg::cpu
