// uint8 -> float32 normalisation, one pass over the image. torch's two-step version (a converting
// copy, then an in-place multiply and subtract) reads and writes the float image three times.
#include "cpu/normalize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/threads.h"

namespace fastseg::cpu {
namespace {

// One image row. The interleaved HWC -> planar case is the one that matters (uint8 frames from a
// camera or a decoder); C is a template parameter there so the compiler unrolls the channel loop.
template <int C>
void row_interleaved(const uint8_t* src, float* const* dst, int64_t dW, int64_t W, const float* scale,
                     const float* shift) {
  for (int c = 0; c < C; ++c) {
    float* d = dst[c];
    const float a = scale[c], b = -shift[c];
    if (dW == 1) {
      for (int64_t x = 0; x < W; ++x) d[x] = std::fma(static_cast<float>(src[x * C + c]), a, b);
    } else {
      for (int64_t x = 0; x < W; ++x) d[x * dW] = std::fma(static_cast<float>(src[x * C + c]), a, b);
    }
  }
}

// HWC -> HWC (channels_last output): one contiguous run of W*C values whose scale and shift repeat
// with period C; laid out over a block of kBlock values (a multiple of C) so the loop vectorises.
constexpr int64_t kBlock = 192;  // divisible by 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64

void row_same_layout(const uint8_t* src, float* dst, int64_t n, const float* a, const float* b) {
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock)
    for (int64_t j = 0; j < kBlock; ++j) dst[i + j] = std::fma(static_cast<float>(src[i + j]), a[j], b[j]);
  for (int64_t j = 0; i + j < n; ++j) dst[i + j] = std::fma(static_cast<float>(src[i + j]), a[j], b[j]);
}

void row_strided(const uint8_t* src, int64_t sC, int64_t sW, float* const* dst, int64_t dW, int64_t C,
                 int64_t W, const float* scale, const float* shift) {
  for (int64_t c = 0; c < C; ++c) {
    const uint8_t* s = src + c * sC;
    float* d = dst[c];
    const float a = scale[c], b = -shift[c];
    for (int64_t x = 0; x < W; ++x) d[x * dW] = std::fma(static_cast<float>(s[x * sW]), a, b);
  }
}

}  // namespace

void normalize_image(const Buffer& src, const Buffer& dst, const std::vector<float>& scale,
                     const std::vector<float>& shift, int num_threads, bool own_threads) {
  src.check_rank(4, "images");
  dst.check_rank(4, "out");
  src.check_dtype(DType::kUInt8, "images");
  dst.check_dtype(DType::kFloat32, "out");
  if (src.shape != dst.shape) throw std::invalid_argument("out: shape differs from images");
  const int64_t N = src.shape[0], C = src.shape[1], H = src.shape[2], W = src.shape[3];
  if (static_cast<int64_t>(scale.size()) != C || static_cast<int64_t>(shift.size()) != C)
    throw std::invalid_argument("scale, shift: expected " + std::to_string(C) + " values each");
  const int64_t rows = N * H;
  if (rows == 0 || W == 0 || C == 0) return;
  if (C > 64) throw std::invalid_argument("images: at most 64 channels");
  const uint8_t* s0 = src.data<uint8_t>();
  float* d0 = dst.data<float>();
  const int64_t sN = src.strides[0], sC = src.strides[1], sH = src.strides[2], sW = src.strides[3];
  const int64_t dN = dst.strides[0], dC = dst.strides[1], dH = dst.strides[2], dW = dst.strides[3];
  const bool interleaved3 = C == 3 && sC == 1 && sW == 3;
  const bool same_layout = sC == 1 && sW == C && dC == 1 && dW == C && kBlock % C == 0;
  float a[kBlock], b[kBlock];
  for (int64_t j = 0; j < kBlock; ++j) a[j] = scale[j % C], b[j] = -shift[j % C];
  // Rows in contiguous blocks, one per thread. A thread is worth it from ~256 K pixels on OpenMP's
  // warm pool; a thread of our own costs a start, so from ~1 M.
  const int64_t per_thread = own_threads ? int64_t{1} << 20 : int64_t{1} << 18;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, rows * W / per_thread)));
  parallel_region(threads, own_threads, [&](int t) {
    float* dst_rows[64];
    for (int64_t r = rows * t / threads, end = rows * (t + 1) / threads; r < end; ++r) {
      const int64_t n = r / H, y = r % H;
      const uint8_t* s = s0 + n * sN + y * sH;
      if (same_layout) {
        row_same_layout(s, d0 + n * dN + y * dH, W * C, a, b);
        continue;
      }
      for (int64_t c = 0; c < C; ++c) dst_rows[c] = d0 + n * dN + c * dC + y * dH;
      if (interleaved3)
        row_interleaved<3>(s, dst_rows, dW, W, scale.data(), shift.data());
      else
        row_strided(s, sC, sW, dst_rows, dW, C, W, scale.data(), shift.data());
    }
  });
}

}  // namespace fastseg::cpu
