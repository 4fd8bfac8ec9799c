// Fused bilinear upsample + per-pixel argmax (and optional max softmax probability) on the CPU.
#pragma once
#include <cstdint>

#include "common/buffer.h"

namespace fastseg::cpu {

// logits [N,C,h,w] (any strides) of dtype float32 | float16 | bfloat16;
// labels [N,H,W] of dtype uint8 | int16 | int32 | int64 (each buffer carries its dtype); confidence [N,H,W] float32 or
// null; max_value [N,H,W] float32 or null: the interpolated maximum logit (lets tests check the
// kernel's arithmetic against F.interpolate bit for bit). own_threads: run on threads of this call's
// own instead of OpenMP's pool (common/threads.h).
void upsample_argmax(const Buffer& logits, const Buffer& labels, const Buffer* confidence,
                     const Buffer* max_value, bool align_corners, int num_threads,
                     bool own_threads);

// Bytes of scratch memory (all threads together) that upsample_argmax allocates for these sizes.
int64_t upsample_argmax_workspace_bytes(int64_t C, int64_t h, int64_t w, int64_t H, int64_t W,
                                        bool align_corners, int num_threads);

}  // namespace fastseg::cpu
