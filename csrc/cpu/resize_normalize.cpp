// Pixel-format conversion + antialiased bilinear resize + normalisation, one pass over the frame.
//
// Separable, vertical pass first: every output row is a weighted sum of a few whole source rows,
// which for the common interleaved uint8 frame is one contiguous run of W*3 bytes per tap, so the
// heavy half of the work (shrinking a 4K frame reads every source pixel about twice) is a plain
// vectorised multiply-add over bytes. The horizontal pass then filters that one float row down to
// the output width (a short dot product per output value) and normalises it on the way out.
// Consecutive output rows share source rows, which are still in L2 when read again.
#include "cpu/resize_normalize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/threads.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FS_RSN_AVX2 1
#else
#define FS_RSN_AVX2 0
#endif

namespace fastseg::cpu {
namespace {

// Antialiased bilinear taps for one axis, as PyTorch computes them for an explicit output size: the
// ratio r = in / out; the triangle filter's support is max(r, 1) source pixels each side of the
// output pixel's centre r * (i + 0.5), its argument divided by max(r, 1); weights normalised to sum 1.
struct Taps {
  int64_t K = 1;                // taps per output, padded with zero weights
  std::vector<int64_t> start;   // per output: first source index (start + K may pass `in`)
  std::vector<int64_t> count;   // per output: source pixels inside the image (start + count <= in)
  std::vector<float> weight;    // [out][K]

  Taps(int64_t in, int64_t out, int64_t multiple) : start(out), count(out) {
    const double ratio = static_cast<double>(in) / static_cast<double>(out);
    const double support = std::max(ratio, 1.0), inv = 1.0 / support;
    K = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
    K = (K + multiple - 1) / multiple * multiple;
    weight.assign(out * K, 0.f);
    std::vector<double> w(K);
    for (int64_t i = 0; i < out; ++i) {
      const double center = ratio * (static_cast<double>(i) + 0.5);
      const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
      const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in);
      const int64_t n = std::min(hi - lo, K);
      double total = 0;
      for (int64_t j = 0; j < n; ++j) {
        w[j] = std::max(0.0, 1.0 - std::fabs((static_cast<double>(j + lo) - center + 0.5) * inv));
        total += w[j];
      }
      start[i] = lo;
      count[i] = std::max<int64_t>(n, 1);
      for (int64_t j = 0; j < n; ++j) weight[i * K + j] = static_cast<float>(total > 0 ? w[j] / total : 0.0);
    }
  }
};

// sum_k w[k] * a[k], k < K (K a multiple of 8 on the AVX2 path).
inline float dot(const float* w, const float* a, int64_t K) {
#if FS_RSN_AVX2
  __m256 s = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(a + k), s);
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  const __m128 d = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(d, _mm_shuffle_ps(d, d, 1)));
#else
  float s = 0.f;
  for (int64_t k = 0; k < K; ++k) s += w[k] * a[k];
  return s;
#endif
}

// acc[i] (+)= w * s[i] over a contiguous run of bytes: the vertical pass's inner loop.
inline void accumulate(const uint8_t* s, int64_t n, float w, bool first, float* acc) {
  if (first) {
    for (int64_t i = 0; i < n; ++i) acc[i] = w * static_cast<float>(s[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) acc[i] += w * static_cast<float>(s[i]);
  }
}

inline void accumulate(const float* s, int64_t n, float w, bool first, float* acc) {
  if (first) {
    for (int64_t i = 0; i < n; ++i) acc[i] = w * s[i];
  } else {
    for (int64_t i = 0; i < n; ++i) acc[i] += w * s[i];
  }
}

struct Source {
  const uint8_t* base;
  PixelFormat format;
  std::vector<int64_t> st;  // the buffer's strides
  int64_t H, W;
  float m[9], off[3];

  // Source row y of image n as three float planes (RGB), YUV formats only.
  void yuv_row(int64_t n, int64_t y, float* r, float* g, float* b) const {
    const uint8_t* row = base + n * st[0] + y * st[1];
    const uint8_t* uv = format == PixelFormat::kNV12 ? base + n * st[0] + (H + y / 2) * st[1] : row;
    for (int64_t x = 0; x < W; ++x) {
      float Y, U, V;
      if (format == PixelFormat::kNV12) {
        Y = row[x * st[2]];
        U = uv[(x & ~int64_t{1}) * st[2]];
        V = uv[(x | 1) * st[2]];
      } else {
        Y = row[x * st[2]];
        U = row[(x & ~int64_t{1}) * st[2] + st[3]];
        V = row[(x | 1) * st[2] + st[3]];
      }
      const float yy = Y - off[0], uu = U - off[1], vv = V - off[2];
      r[x] = std::clamp(m[0] * yy + m[1] * uu + m[2] * vv, 0.f, 255.f);
      g[x] = std::clamp(m[3] * yy + m[4] * uu + m[5] * vv, 0.f, 255.f);
      b[x] = std::clamp(m[6] * yy + m[7] * uu + m[8] * vv, 0.f, 255.f);
    }
  }
};

// Per-thread rows: the interleaved accumulator, three planes (padded for the dot products'
// over-reads, the padding zero), three converted YUV planes.
struct Scratch {
  std::vector<float> inter, planes, yuv;
  int64_t stride;
  Scratch(int64_t W, int64_t K) : inter(W * 3), planes(3 * (W + K), 0.f), yuv(3 * W), stride(W + K) {}
  float* plane(int64_t c) { return planes.data() + c * stride; }
};

// The vertical pass for one output row: planes[c][x] = sum_k wy[k] * rgb[c][ys + k][x].
void vertical(const Source& s, int64_t n, int64_t ys, const float* wy, int64_t taps, Scratch& t) {
  const int64_t W = s.W;
  if (s.format == PixelFormat::kNV12 || s.format == PixelFormat::kYUYV) {
    float* yuv = t.yuv.data();
    for (int64_t k = 0; k < taps; ++k) {
      s.yuv_row(n, ys + k, yuv, yuv + W, yuv + 2 * W);
      for (int64_t c = 0; c < 3; ++c) accumulate(yuv + c * W, W, wy[k], k == 0, t.plane(c));
    }
    return;
  }
  const int64_t sN = s.st[0], sC = s.st[1], sH = s.st[2], sW = s.st[3];
  if (sC == 1 && sW == 3) {  // interleaved rows (HWC frames): one run of W*3 bytes per tap
    float* acc = t.inter.data();
    for (int64_t k = 0; k < taps; ++k) accumulate(s.base + n * sN + (ys + k) * sH, W * 3, wy[k], k == 0, acc);
    float* p0 = t.plane(0);
    float* p1 = t.plane(1);
    float* p2 = t.plane(2);
    for (int64_t x = 0; x < W; ++x) p0[x] = acc[3 * x], p1[x] = acc[3 * x + 1], p2[x] = acc[3 * x + 2];
    return;
  }
  for (int64_t c = 0; c < 3; ++c) {
    float* p = t.plane(c);
    for (int64_t k = 0; k < taps; ++k) {
      const uint8_t* row = s.base + n * sN + c * sC + (ys + k) * sH;
      if (sW == 1) {
        accumulate(row, W, wy[k], k == 0, p);
      } else {
        for (int64_t x = 0; x < W; ++x) p[x] = (k == 0 ? 0.f : p[x]) + wy[k] * static_cast<float>(row[x * sW]);
      }
    }
  }
}

}  // namespace

void resize_normalize(const Buffer& src, int format, const Buffer& dst, const std::vector<float>& scale,
                      const std::vector<float>& shift, const std::vector<float>& yuv, int num_threads,
                      bool own_threads) {
  src.check_dtype(DType::kUInt8, "images");
  dst.check_rank(4, "out");
  dst.check_dtype(DType::kFloat32, "out");
  if (scale.size() != 3 || shift.size() != 3) throw std::invalid_argument("scale, shift: expected 3 values each");
  if (format < 0 || format > 3) throw std::invalid_argument("format: unknown pixel format " + std::to_string(format));
  Source s{src.data<uint8_t>(), static_cast<PixelFormat>(format), src.strides, 0, 0, {}, {}};
  switch (s.format) {
    case PixelFormat::kRGB:
    case PixelFormat::kBGR:
      src.check_rank(4, "images");
      if (src.shape[1] != 3) throw std::invalid_argument("images: expected [N,3,H,W]");
      s.H = src.shape[2];
      s.W = src.shape[3];
      break;
    case PixelFormat::kNV12:
      src.check_rank(3, "images");
      if (src.shape[1] % 3 != 0) throw std::invalid_argument("images: NV12 has H*3/2 rows");
      s.H = src.shape[1] / 3 * 2;
      s.W = src.shape[2];
      break;
    case PixelFormat::kYUYV:
      src.check_rank(4, "images");
      if (src.shape[3] != 2) throw std::invalid_argument("images: YUYV is [N,H,W,2]");
      s.H = src.shape[1];
      s.W = src.shape[2];
      break;
  }
  const bool is_yuv = s.format == PixelFormat::kNV12 || s.format == PixelFormat::kYUYV;
  if (is_yuv) {
    if (yuv.size() != 12) throw std::invalid_argument("yuv: expected 9 matrix entries and 3 offsets");
    if (s.H % 2 || s.W % 2) throw std::invalid_argument("images: NV12 / YUYV need an even width and height");
    std::copy(yuv.begin(), yuv.begin() + 9, s.m);
    std::copy(yuv.begin() + 9, yuv.end(), s.off);
  }
  const int64_t N = src.shape[0], h = dst.shape[2], w = dst.shape[3];
  if (dst.shape[0] != N || dst.shape[1] != 3) throw std::invalid_argument("out: expected [N,3,h,w] with the images' N");
  if (N == 0 || h == 0 || w == 0) return;
  if (s.H < 1 || s.W < 1) throw std::invalid_argument("images: empty image");

  const Taps ty(s.H, h, 1), tx(s.W, w, FS_RSN_AVX2 ? 8 : 1);
  const bool same_width = w == s.W;
  const int perm[3] = {s.format == PixelFormat::kBGR ? 2 : 0, 1, s.format == PixelFormat::kBGR ? 0 : 2};
  float* d0 = dst.data<float>();
  const int64_t dN = dst.strides[0], dC = dst.strides[1], dH = dst.strides[2], dW = dst.strides[3];
  const int64_t rows = N * h;
  // Contiguous blocks of output rows, one per thread; worth a thread from ~256 K source values on
  // OpenMP's warm pool, ~1 M on threads of our own (each costs a start).
  const int64_t work = N * s.H * s.W * 3;
  const int64_t per_thread = own_threads ? int64_t{1} << 20 : int64_t{1} << 18;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, work / per_thread)));
  parallel_region(threads, own_threads, [&](int t) {
    Scratch scratch(s.W, tx.K);
    for (int64_t r = rows * t / threads, end = rows * (t + 1) / threads; r < end; ++r) {
      const int64_t n = r / h, y = r % h;
      vertical(s, n, ty.start[y], ty.weight.data() + y * ty.K, ty.count[y], scratch);
      for (int c = 0; c < 3; ++c) {
        const float* p = scratch.plane(perm[c]);
        const float a = scale[c], b = -shift[c];
        float* d = d0 + n * dN + c * dC + y * dH;
        if (same_width) {
          for (int64_t x = 0; x < w; ++x) d[x * dW] = std::fma(p[x], a, b);
        } else {
          for (int64_t x = 0; x < w; ++x)
            d[x * dW] = std::fma(dot(tx.weight.data() + x * tx.K, p + tx.start[x], tx.K), a, b);
        }
      }
    }
  });
}

}  // namespace fastseg::cpu
