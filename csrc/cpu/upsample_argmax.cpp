// Fused bilinear upsample + argmax over channels, CPU (OpenMP or own threads, see common/threads.h;
// AVX2/FMA where compiled).
//
// The full-resolution logits are never materialised. Bilinear interpolation is separable
// (common/bilinear.h): each task owns a band of output rows x a tile of output columns, and keeps
// two input rows interpolated along x for all channels (C x tile floats each, cached in L1/L2).
// Every output pixel then costs, per channel, one multiply and one fma (torch's exact operation
// order, so the values equal F.interpolate's bit for bit) plus a compare and two blends for the
// running max / argmax, eight pixels per AVX2 instruction. With confidence requested, a running
// sum of exp(v - max) is kept in the same pass (online softmax), so the logits are read once.
//
// Labels only (no confidence): a bilinear value is a convex combination of the four input pixels
// around it, with the same weights for every class, so where one class beats every other by a
// clear margin at all four corners it wins everywhere between them. Such cells (most of an image
// enlarged several times) are filled without interpolating any channel; the margin is far above
// float rounding, so the labels equal the full computation's bit for bit (see `certain_row`).
#include "cpu/upsample_argmax.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/bilinear.h"
#include "common/threads.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FS_UPS_AVX2 1
#else
#define FS_UPS_AVX2 0
#endif

namespace fastseg::cpu {
namespace {

constexpr int64_t kLanes = 8;         // floats per AVX2 register; row buffers are padded to this
constexpr int64_t kRowBytes = 32768;  // target size of the two cached rows (per thread): L1-sized

// Sizes and the x / y interpolation taps shared (read-only) by all threads.
struct Plan {
  int64_t N, C, h, w, H, W;
  int64_t tile_w, tile_wp, n_tiles, band_h, n_bands, seg_max;
  std::vector<int32_t> ix0, ix1;  // per output column: input columns
  std::vector<float> wx0, wx1;    //                    and their weights
  std::vector<LinearTap> ty;      // per output row

  Plan(int64_t C_, int64_t h_, int64_t w_, int64_t H_, int64_t W_, int64_t N_, bool ac, int threads)
      : N(N_), C(C_), h(h_), w(w_), H(H_), W(W_) {
    // Column tile: the two cached rows (2 x C x tile floats) should fit in L1.
    tile_w = kRowBytes / (2 * C * static_cast<int64_t>(sizeof(float)));
    tile_w = std::max<int64_t>(32, std::min<int64_t>(512, tile_w / 32 * 32));
    tile_w = std::min(tile_w, W);
    tile_wp = (tile_w + kLanes - 1) / kLanes * kLanes;
    n_tiles = (W + tile_w - 1) / tile_w;
    // Row bands: tall bands reuse each interpolated input row for many output rows; enough
    // bands that every thread gets several tasks (dynamic scheduling balances the rest).
    const int64_t want_tasks = 4 * static_cast<int64_t>(threads);
    const int64_t per_band = std::max<int64_t>(1, N * n_tiles);
    n_bands = std::min<int64_t>(H, std::max<int64_t>(1, (want_tasks + per_band - 1) / per_band));
    band_h = (H + n_bands - 1) / n_bands;
    n_bands = (H + band_h - 1) / band_h;

    const float sx = bilinear_scale(w, W, ac), sy = bilinear_scale(h, H, ac);
    ix0.resize(W);
    ix1.resize(W);
    wx0.resize(W);
    wx1.resize(W);
    for (int64_t x = 0; x < W; ++x) {
      const LinearTap t = bilinear_tap(sx, x, w, W, ac);
      ix0[x] = t.i0;
      ix1[x] = t.i1;
      wx0[x] = t.w0;
      wx1[x] = t.w1;
    }
    ty.resize(H);
    for (int64_t y = 0; y < H; ++y) ty[y] = bilinear_tap(sy, y, h, H, ac);
    seg_max = 1;
    for (int64_t t = 0; t < n_tiles; ++t) {
      const int64_t x0 = t * tile_w, x1 = std::min(W, x0 + tile_w) - 1;
      seg_max = std::max<int64_t>(seg_max, ix1[x1] - ix0[x0] + 1);
    }
    seg_max += kLanes;  // room for an 8-wide window load at the segment's end
  }

  // (+ the per-pixel certain labels of the cell shortcut, int16 per input pixel, labels-only calls)
  int64_t shared_bytes() const {
    return W * (2 * 4 + 2 * 4) + H * static_cast<int64_t>(sizeof(LinearTap)) + N * h * w * 2;
  }
  int64_t thread_bytes() const {
    return 4 * (2 * C * tile_wp      // two interpolated rows
                + C * seg_max        // the input row segment, as float
                + 7 * tile_wp)       // relative indices, x weights, argmax, confidence, max
           + 16 * tile_wp;           // decided cells, undecided blocks (at most)
  }
};

// ---- loading the input row segment as float -------------------------------------------------

template <typename T>
inline float load_as_float(const T* p);
template <>
inline float load_as_float<float>(const float* p) { return *p; }
struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };
template <>
inline float load_as_float<Half>(const Half* p) { return half_bits_to_float(p->bits); }
template <>
inline float load_as_float<BFloat16>(const BFloat16* p) { return bf16_bits_to_float(p->bits); }

// seg[c * seg_max + i] = logits[n, c, y, lo + i] for i < len, whatever the layout.
template <typename T>
void load_segment(const T* base, int64_t sC, int64_t sW, int64_t C, int64_t len, int64_t seg_max,
                  float* seg) {
  if (std::llabs(sC) < std::llabs(sW)) {  // channels_last-like: walk channels innermost
    for (int64_t i = 0; i < len; ++i)
      for (int64_t c = 0; c < C; ++c) seg[c * seg_max + i] = load_as_float(base + c * sC + i * sW);
  } else {
    for (int64_t c = 0; c < C; ++c) {
      const T* src = base + c * sC;
      float* dst = seg + c * seg_max;
      if (sW == 1) {
        for (int64_t i = 0; i < len; ++i) dst[i] = load_as_float(src + i);
      } else {
        for (int64_t i = 0; i < len; ++i) dst[i] = load_as_float(src + i * sW);
      }
    }
  }
}

// ---- horizontal pass: one input row, all channels, the tile's columns -------------------------
// Returns false when a value is not finite (then the NaN-aware vertical path is used).

bool interpolate_row(const float* seg, int64_t seg_max, int64_t C, const int32_t* rel0,
                     const int32_t* rel1, const float* w0, const float* w1, int64_t nxp,
                     int64_t cs, float* row) {
#if FS_UPS_AVX2
  const __m256i expo = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  for (int64_t x = 0; x < nxp; x += kLanes) {
    const __m256i i0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rel0 + x));
    const __m256i i1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rel1 + x));
    const __m256 a0 = _mm256_loadu_ps(w0 + x), a1 = _mm256_loadu_ps(w1 + x);
    // Indices are non-decreasing: when the 8 outputs read at most 8 consecutive inputs (any
    // upsampling), one load and two lane permutes replace two (slow) gathers.
    const int32_t base = rel0[x];
    if (rel1[x + kLanes - 1] - base < kLanes) {
      const __m256i b = _mm256_set1_epi32(base);
      const __m256i p0 = _mm256_sub_epi32(i0, b), p1 = _mm256_sub_epi32(i1, b);
      for (int64_t c = 0; c < C; ++c) {
        const __m256 win = _mm256_loadu_ps(seg + c * seg_max + base);
        const __m256 v = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(win, p0), a0,
                                         _mm256_mul_ps(_mm256_permutevar8x32_ps(win, p1), a1));
        _mm256_storeu_ps(row + c * cs + x, v);
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), expo), expo));
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const float* s = seg + c * seg_max;
        const __m256 v = _mm256_fmadd_ps(_mm256_i32gather_ps(s, i0, 4), a0,
                                         _mm256_mul_ps(_mm256_i32gather_ps(s, i1, 4), a1));
        _mm256_storeu_ps(row + c * cs + x, v);
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), expo), expo));
      }
    }
  }
  return _mm256_testz_si256(bad, bad);
#else
  uint32_t bad = 0;
  for (int64_t c = 0; c < C; ++c) {
    const float* s = seg + c * seg_max;
    float* r = row + c * cs;
    for (int64_t x = 0; x < nxp; ++x) {
      const float v = lerp_torch(s[rel0[x]], w0[x], s[rel1[x]], w1[x]);
      r[x] = v;
      uint32_t bits;
      std::memcpy(&bits, &v, sizeof bits);
      bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
  }
  return bad == 0;
#endif
}

// ---- vertical pass + argmax (+ online softmax denominator) ------------------------------------

// Scalar, NaN-aware: a NaN counts as the maximum and the first NaN wins, as in torch.argmax.
// Used for rows holding inf / NaN, and as the portable path without AVX2.
// Confidence where values are infinite: a channel equal to the running maximum adds exactly 1 to
// the sum, also when both are +inf or both -inf (where v - best would be NaN), so k channels at
// +inf give 1/k and all channels at -inf give 1/C, the softmax's limit; a NaN makes it NaN.
template <bool CONF>
void vertical_scalar(const float* r0, const float* r1, int64_t cs, int64_t C, float h0, float h1,
                     int64_t nx, int32_t* arg, float* conf, float* maxv) {
  for (int64_t x = 0; x < nx; ++x) {
    float best = lerp_torch(r0[x], h0, r1[x], h1), sum = 1.f;
    int32_t k = 0;
    for (int64_t c = 1; c < C; ++c) {
      const float v = lerp_torch(r0[c * cs + x], h0, r1[c * cs + x], h1);
      if (v > best || (v != v && best == best)) {
        if (CONF) sum = sum * std::exp(best - v) + 1.f;
        best = v;
        k = static_cast<int32_t>(c);
      } else if (CONF) {
        sum += v == best ? 1.f : std::exp(v - best);
      }
    }
    arg[x] = k;
    maxv[x] = best;
    if (CONF) conf[x] = 1.f / sum;
  }
}

#if FS_UPS_AVX2
// exp(t) for t <= 0 (Cephes-style: 2^n * polynomial on the reduced argument), ~1 ulp.
inline __m256 exp_nonpositive(__m256 t) {
  t = _mm256_max_ps(t, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), t);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// U registers of 8 pixels each: running max, argmax and (CONF) sum of exp(v - max) stay in
// registers while the channels stream past. Rows hold only finite values here, so no NaN occurs.
template <int U, bool CONF>
inline void vertical_block(const float* r0, const float* r1, int64_t cs, int64_t C, __m256 h0,
                           __m256 h1, int32_t* arg, float* conf, float* maxv) {
  __m256 best[U], sum[U];
  __m256i k[U];
  for (int u = 0; u < U; ++u) {
    best[u] = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + 8 * u), h0,
                              _mm256_mul_ps(_mm256_loadu_ps(r1 + 8 * u), h1));
    k[u] = _mm256_setzero_si256();
    if (CONF) sum[u] = _mm256_set1_ps(1.f);
  }
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (int64_t c = 1; c < C; ++c) {
    const __m256i vc = _mm256_set1_epi32(static_cast<int>(c));
    const float* a = r0 + c * cs;
    const float* b = r1 + c * cs;
    for (int u = 0; u < U; ++u) {
      const __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(a + 8 * u), h0,
                                       _mm256_mul_ps(_mm256_loadu_ps(b + 8 * u), h1));
      const __m256 gt = _mm256_cmp_ps(v, best[u], _CMP_GT_OQ);
      if (CONF) {
        // e = exp(-|v - best|); new max: sum * e + 1, otherwise sum + e
        const __m256 e = exp_nonpositive(_mm256_or_ps(_mm256_sub_ps(v, best[u]), sign));
        sum[u] = _mm256_blendv_ps(_mm256_add_ps(sum[u], e), _mm256_fmadd_ps(sum[u], e, one), gt);
      }
      best[u] = _mm256_max_ps(v, best[u]);
      k[u] = _mm256_castps_si256(
          _mm256_blendv_ps(_mm256_castsi256_ps(k[u]), _mm256_castsi256_ps(vc), gt));
    }
  }
  const __m256 expo = _mm256_castsi256_ps(_mm256_set1_epi32(0x7f800000));
  for (int u = 0; u < U; ++u) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(arg + 8 * u), k[u]);
    _mm256_storeu_ps(maxv + 8 * u, best[u]);
    if (CONF) {
      _mm256_storeu_ps(conf + 8 * u, _mm256_div_ps(one, sum[u]));
      // finite rows can still overflow in the vertical lerp: redo those pixels' sums exactly
      if (_mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(best[u], expo), expo, _CMP_EQ_OQ)))
        vertical_scalar<true>(r0 + 8 * u, r1 + 8 * u, cs, C, _mm256_cvtss_f32(h0), _mm256_cvtss_f32(h1), 8,
                              arg + 8 * u, conf + 8 * u, maxv + 8 * u);
    }
  }
}

template <bool CONF>
void vertical_avx2(const float* r0, const float* r1, int64_t cs, int64_t C, float h0, float h1,
                   int64_t nxp, int32_t* arg, float* conf, float* maxv) {
  const __m256 vh0 = _mm256_set1_ps(h0), vh1 = _mm256_set1_ps(h1);
  constexpr int U = CONF ? 2 : 4;
  int64_t x = 0;
  for (; x + 8 * U <= nxp; x += 8 * U)
    vertical_block<U, CONF>(r0 + x, r1 + x, cs, C, vh0, vh1, arg + x, conf + x, maxv + x);
  for (; x < nxp; x += 8)
    vertical_block<1, CONF>(r0 + x, r1 + x, cs, C, vh0, vh1, arg + x, conf + x, maxv + x);
}
#endif

template <bool CONF>
void vertical(const float* r0, const float* r1, bool finite, int64_t cs, int64_t C, float h0,
              float h1, int64_t nx, int64_t nxp, int32_t* arg, float* conf, float* maxv) {
#if FS_UPS_AVX2
  if (finite) return vertical_avx2<CONF>(r0, r1, cs, C, h0, h1, nxp, arg, conf, maxv);
#endif
  vertical_scalar<CONF>(r0, r1, cs, C, h0, h1, nx, arg, conf, maxv);
}

// ---- cells decided at their corners ----------------------------------------------------------

// An input pixel's class is "certain" when it wins by a margin no rounding can undo (else -1). The
// interpolated difference of classes k and j is a non-negative combination of the corners'
// differences, computed with a few roundings of 2^-24 relative to the corners' magnitudes; a gap
// of 2^-12 of the larger magnitude at every corner (which bounds every class's gap, not only the
// runner-up's) leaves it positive, and first-index tie-breaking never comes into play.
constexpr float kCertainMargin = 1.f / 4096.f;
using Certain = int16_t;  // labels of up to 32767 classes; more classes skip the shortcut

// The certain labels of one input row (n, y) into o[0..w), and how many of its pixels share their
// decided class with their right-hand neighbour (few, as with noise-like logits, and the shortcut
// would not pay). Blocks of kBlock pixels keep their running best, runner-up, argmax and
// finiteness in registers while the channels stream past; branch-free, so the block loops
// vectorise. Rows are shared out among the tail's threads (`run`).
constexpr int64_t kBlock = 32;

// The row's channels as contiguous floats: the logits themselves (float, unit stride), or
// converted into `scratch` (C x w).
template <typename T>
inline const float* row_as_float(const T* row, int64_t& sC, int64_t sW, int64_t C, int64_t w,
                                 std::vector<float>& scratch) {
  if constexpr (std::is_same_v<T, float>) {
    if (sW == 1) return row;
  }
  scratch.resize(C * w);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t x = 0; x < w; ++x) scratch[c * w + x] = load_as_float(row + c * sC + x * sW);
  sC = w;
  return scratch.data();
}

// Pixels [x0, x0 + n) of a row of contiguous channels (stride sC), n <= kBlock.
inline void certain_block(const float* v, int64_t sC, int64_t C, int64_t n, Certain* o) {
  float best[kBlock], second[kBlock], bad[kBlock];
  int32_t arg[kBlock];
  for (int64_t j = 0; j < kBlock; ++j) {
    const float x = j < n ? v[j] : 0.f;
    best[j] = x;
    second[j] = -std::numeric_limits<float>::infinity();
    bad[j] = x - x;  // 0 while every value is finite, NaN after
    arg[j] = 0;
  }
  for (int64_t c = 1; c < C; ++c) {
    const float* vc = v + c * sC;
    const int32_t k = static_cast<int32_t>(c);
    for (int64_t j = 0; j < kBlock; ++j) {
      const float x = j < n ? vc[j] : 0.f;
      const bool gt = x > best[j];
      bad[j] += x - x;
      second[j] = gt ? best[j] : (second[j] < x ? x : second[j]);
      best[j] = gt ? x : best[j];
      arg[j] = gt ? k : arg[j];
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    const float magnitude = std::max(std::fabs(best[j]), std::fabs(second[j]));
    const bool clear = C == 1 || best[j] - second[j] > kCertainMargin * magnitude;
    o[j] = bad[j] == 0.f && clear ? static_cast<Certain>(arg[j]) : Certain{-1};
  }
}

template <typename T>
int64_t certain_row(const T* row, int64_t sC, int64_t sW, int64_t C, int64_t w, std::vector<float>& scratch,
                    Certain* o) {
  const float* v = row_as_float(row, sC, sW, C, w, scratch);
  int64_t x = 0;
  for (; x + kBlock <= w; x += kBlock) certain_block(v + x, sC, C, kBlock, o + x);
  if (x < w) certain_block(v + x, sC, C, w - x, o + x);
  int64_t agreeing = 0;
  for (x = 0; x + 1 < w; ++x) agreeing += o[x] >= 0 && o[x] == o[x + 1];
  return agreeing;
}

// The certain labels of every input pixel, certain[n, y, x], computed by the threads of the tail's
// parallel region before its tasks start: each takes rows until none is left, then waits until all
// are done (the other threads are inside the same region, finishing their last row). Returns how
// many pixels agree with their right-hand neighbour, the same in every thread.
struct CertainLabels {
  std::vector<Certain> labels;
  std::atomic<int64_t> next_row{0}, rows_done{0}, agreeing{0};

  template <typename T>
  int64_t fill(const T* logits, const std::vector<int64_t>& st, int64_t N, int64_t C, int64_t h, int64_t w) {
    std::vector<float> scratch;
    const int64_t rows = N * h;
    for (int64_t r; (r = next_row.fetch_add(1)) < rows;) {
      const T* row = logits + (r / h) * st[0] + (r % h) * st[2];
      agreeing.fetch_add(certain_row(row, st[1], st[3], C, w, scratch, labels.data() + r * w));
      rows_done.fetch_add(1);
    }
    while (rows_done.load() < rows) std::this_thread::yield();
    return agreeing.load();
  }
};

// The cells of one tile's output columns between input rows a0 and a1 (their certain labels, from
// the tile's first input column; len columns). First per input column, vectorised: `known` holds,
// for each column i, its class where the two rows agree on it (else -1) at [len + i], and at [i]
// the class where columns i and i + 1 also agree (a cell's four corners). Then per output column x
// one load, at pick[x] (the cell's first column, + len where both its columns are one, at the
// image's edge): cell[x] is the decided class, or 0 where the corners disagree. The blocks of
// kLanes columns holding an undecided cell are returned as runs [start, end) of consecutive blocks
// (runs, not single blocks, keep the vertical pass's unrolled loop on busy rows).
template <typename L>
int64_t decide_cells(const Certain* __restrict a0, const Certain* __restrict a1, int64_t len,
                     const int32_t* __restrict pick, int64_t nx, Certain* __restrict known, L* __restrict cell,
                     int64_t* run_start, int64_t* run_end) {
  Certain* __restrict same = known + len;
  for (int64_t i = 0; i < len; ++i) same[i] = a0[i] == a1[i] ? a0[i] : Certain{-1};
  for (int64_t i = 0; i + 1 < len; ++i) known[i] = same[i] == same[i + 1] ? same[i] : Certain{-1};
  known[len - 1] = -1;  // no cell starts at the last column with a second one
  int64_t runs = 0;
  for (int64_t b = 0, x = 0; x < nx; ++b) {
    Certain lowest = 0;
    for (const int64_t e = std::min(nx, x + kLanes); x < e; ++x) {
      const Certain c = known[pick[x]];
      cell[x] = static_cast<L>(c < 0 ? 0 : c);
      lowest = std::min(lowest, c);
    }
    if (lowest >= 0) continue;
    if (runs > 0 && run_end[runs - 1] == b) {
      run_end[runs - 1] = b + 1;
    } else {
      run_start[runs] = b;
      run_end[runs++] = b + 1;
    }
  }
  return runs;
}

// ---- driver ------------------------------------------------------------------------------------

// Strided float32 [N,H,W] output, or none.
struct FloatOut {
  float* ptr = nullptr;
  int64_t sN = 0, sH = 0, sW = 0;
  explicit FloatOut(const Buffer* b) {
    if (b) {
      ptr = b->data<float>();
      sN = b->strides[0];
      sH = b->strides[1];
      sW = b->strides[2];
    }
  }
  void write_row(int64_t n, int64_t y, int64_t X0, int64_t nx, const float* row) const {
    float* dst = ptr + n * sN + y * sH + X0 * sW;
    for (int64_t x = 0; x < nx; ++x) dst[x * sW] = row[x];
  }
};

template <typename T, typename L>
void run(const Plan& p, const Buffer& in, const Buffer& out, const Buffer* cbuf,
         const Buffer* mbuf, int threads, bool own_threads) {
  if (p.C - 1 > static_cast<int64_t>(std::numeric_limits<L>::max()))
    throw std::invalid_argument("labels: dtype too small for " + std::to_string(p.C) + " classes");
  const T* logits = in.data<T>();
  const int64_t sN = in.strides[0], sC = in.strides[1], sH = in.strides[2], sW = in.strides[3];
  L* labels = out.data<L>();
  const int64_t lN = out.strides[0], lH = out.strides[1], lW = out.strides[2];
  const FloatOut confidence(cbuf), max_value(mbuf);
  const int64_t C = p.C, cs = p.tile_wp, n_tasks = p.N * p.n_bands * p.n_tiles;
  std::atomic<int64_t> next_task{0};  // dynamic schedule: tiles differ in cost near the edges
  // The cell shortcut gives labels only, and pays where cells span several output pixels and most
  // of them are decided (smooth logits, as a network's are; not noise).
  const bool try_shortcut = !cbuf && !mbuf && C <= std::numeric_limits<Certain>::max() && p.H * p.W >= 2 * p.h * p.w;
  CertainLabels certain_labels;
  if (try_shortcut) certain_labels.labels.resize(p.N * p.h * p.w);
  const std::vector<Certain>& certain = certain_labels.labels;

  parallel_region(threads, own_threads, [&](int) {
    // locals, not the captured references: stores of byte labels may alias anything, and would
    // make the compiler reload a captured value after each one
    L* const labels_out = labels;
    const int64_t lN_ = lN, lH_ = lH, lW_ = lW;
    const bool shortcut =
        try_shortcut && 4 * certain_labels.fill(logits, in.strides, p.N, C, p.h, p.w) >=
                            3 * p.N * p.h * std::max<int64_t>(p.w - 1, 1);
    std::vector<float> rows(2 * C * cs), seg(C * p.seg_max), confrow(cs), maxrow(cs);
    std::vector<int32_t> rel0(cs), rel1(cs), arg(cs);
    std::vector<float> w0(cs), w1(cs);
    std::vector<L> cell(cs);                    // decided labels of the current input-row pair's cells
    // its runs of consecutive blocks of kLanes columns holding an undecided cell: [start, end) in
    // blocks (runs, not single blocks, keep the vertical pass's unrolled loop on busy rows)
    std::vector<int64_t> run_start(cs / kLanes), run_end(cs / kLanes);
    std::vector<int32_t> pick(cs);                 // see decide_cells
    std::vector<Certain> known(2 * p.seg_max);
    int64_t n_runs = 0;
    bool pair_finite = true;

    for (int64_t task; (task = next_task.fetch_add(1, std::memory_order_relaxed)) < n_tasks;) {
      const int64_t t = task % p.n_tiles, band = (task / p.n_tiles) % p.n_bands;
      const int64_t n = task / (p.n_tiles * p.n_bands);
      const int64_t X0 = t * p.tile_w, nx = std::min(p.tile_w, p.W - X0);
      const int64_t nxp = (nx + kLanes - 1) / kLanes * kLanes;
      const int64_t lo = p.ix0[X0], len = p.ix1[X0 + nx - 1] - lo + 1;
      for (int64_t x = 0; x < nxp; ++x) {  // padding lanes repeat the last column, weight 0
        const bool real = x < nx;
        const int64_t X = X0 + std::min(x, nx - 1);
        rel0[x] = p.ix0[X] - static_cast<int32_t>(lo);
        rel1[x] = p.ix1[X] - static_cast<int32_t>(lo);
        w0[x] = real ? p.wx0[X0 + x] : 0.f;
        w1[x] = real ? p.wx1[X0 + x] : 0.f;
        pick[x] = rel0[x] + (rel0[x] == rel1[x] ? static_cast<int32_t>(len) : 0);
      }
      int64_t slot_row[2] = {-1, -1};
      bool slot_finite[2] = {true, true};
      int64_t cell_rows[2] = {-1, -1};  // the input rows `cell` was filled for
      // Input row `y` interpolated along x, in a slot other than the one holding `keep`.
      auto row_slot = [&](int64_t y, int64_t keep) -> int {
        if (slot_row[0] == y) return 0;
        if (slot_row[1] == y) return 1;
        const int s = slot_row[0] == keep ? 1 : 0;
        load_segment(logits + n * sN + y * sH + lo * sW, sC, sW, C, len, p.seg_max, seg.data());
        slot_finite[s] = interpolate_row(seg.data(), p.seg_max, C, rel0.data(), rel1.data(),
                                         w0.data(), w1.data(), nxp, cs, rows.data() + s * C * cs);
        slot_row[s] = y;
        return s;
      };
      const int64_t y_end = std::min(p.H, (band + 1) * p.band_h);
      for (int64_t y = band * p.band_h; y < y_end; ++y) {
        const LinearTap tap = p.ty[y];
        L* ldst = labels_out + n * lN_ + y * lH_ + X0 * lW_;
        if (shortcut) {
          if (cell_rows[0] != tap.i0 || cell_rows[1] != tap.i1) {  // output rows of one input-row pair share cells
            cell_rows[0] = tap.i0;
            cell_rows[1] = tap.i1;
            n_runs = decide_cells(certain.data() + (n * p.h + tap.i0) * p.w + lo,
                                  certain.data() + (n * p.h + tap.i1) * p.w + lo, len, pick.data(), nx,
                                  known.data(), cell.data(), run_start.data(), run_end.data());
            // The pair's two rows interpolated along x on the runs' columns only (the decided cells'
            // corners are finite: certain_row saw them); the row slots then hold partial rows.
            pair_finite = true;
            slot_row[0] = slot_row[1] = -1;
            for (int64_t j = 0; j < n_runs; ++j) {
              const int64_t x = run_start[j] * kLanes, m = (run_end[j] - run_start[j]) * kLanes;
              const int64_t in_lo = rel0[x], in_len = rel1[x + m - 1] - in_lo + 1;
              for (int s = 0; s < 2; ++s) {
                const int64_t y = s == 0 ? tap.i0 : tap.i1;
                load_segment(logits + n * sN + y * sH + (lo + in_lo) * sW, sC, sW, C, in_len, p.seg_max,
                             seg.data() + in_lo);
                pair_finite = interpolate_row(seg.data(), p.seg_max, C, rel0.data() + x, rel1.data() + x,
                                              w0.data() + x, w1.data() + x, m, cs, rows.data() + s * C * cs + x) &&
                              pair_finite;
              }
            }
          }
          if (pair_finite) {
            const float* r0 = rows.data();
            const float* r1 = rows.data() + C * cs;
            for (int64_t j = 0; j < n_runs; ++j) {
              const int64_t x = run_start[j] * kLanes, m = (run_end[j] - run_start[j]) * kLanes;
              vertical<false>(r0 + x, r1 + x, true, cs, C, tap.w0, tap.w1, m, m, arg.data() + x, nullptr,
                              maxrow.data() + x);
            }
            if (lW_ == 1) {
              std::memcpy(ldst, cell.data(), nx * sizeof(L));
            } else {
              for (int64_t x = 0; x < nx; ++x) ldst[x * lW_] = cell[x];
            }
            for (int64_t j = 0; j < n_runs; ++j) {
              for (int64_t x = run_start[j] * kLanes, e = std::min(nx, run_end[j] * kLanes); x < e; ++x)
                ldst[x * lW_] = static_cast<L>(arg[x]);
            }
            continue;
          }
          // a non-finite value between the pair's rows: its output rows take the full path below
        }
        const int s0 = row_slot(tap.i0, -1);
        const int s1 = row_slot(tap.i1, tap.i0);
        const bool finite = slot_finite[s0] && slot_finite[s1];
        const float* r0 = rows.data() + s0 * C * cs;
        const float* r1 = rows.data() + s1 * C * cs;
        if (confidence.ptr) {
          vertical<true>(r0, r1, finite, cs, C, tap.w0, tap.w1, nx, nxp, arg.data(),
                         confrow.data(), maxrow.data());
          confidence.write_row(n, y, X0, nx, confrow.data());
        } else {
          vertical<false>(r0, r1, finite, cs, C, tap.w0, tap.w1, nx, nxp, arg.data(), nullptr,
                          maxrow.data());
        }
        if (max_value.ptr) max_value.write_row(n, y, X0, nx, maxrow.data());
        if (lW_ == 1) {
          for (int64_t x = 0; x < nx; ++x) ldst[x] = static_cast<L>(arg[x]);
        } else {
          for (int64_t x = 0; x < nx; ++x) ldst[x * lW_] = static_cast<L>(arg[x]);
        }
      }
    }
  });
}

template <typename T>
void run_labels(const Plan& p, const Buffer& in, const Buffer& out, const Buffer* conf,
                const Buffer* maxv, int threads, bool own) {
  switch (out.dtype) {
    case DType::kUInt8: return run<T, uint8_t>(p, in, out, conf, maxv, threads, own);
    case DType::kInt16: return run<T, int16_t>(p, in, out, conf, maxv, threads, own);
    case DType::kInt32: return run<T, int32_t>(p, in, out, conf, maxv, threads, own);
    case DType::kInt64: return run<T, int64_t>(p, in, out, conf, maxv, threads, own);
    default: out.unsupported_dtype("labels");
  }
}

}  // namespace

void upsample_argmax(const Buffer& logits, const Buffer& labels, const Buffer* confidence,
                     const Buffer* max_value, bool align_corners, int num_threads,
                     bool own_threads) {
  logits.check_rank(4, "logits");
  labels.check_rank(3, "labels");
  const int64_t N = logits.shape[0], C = logits.shape[1], h = logits.shape[2], w = logits.shape[3];
  const int64_t H = labels.shape[1], W = labels.shape[2];
  if (C < 1 || h < 1 || w < 1) throw std::invalid_argument("logits: C, h and w must be positive");
  if (labels.shape[0] != N) throw std::invalid_argument("labels: batch size differs from logits");
  if (H < 1 || W < 1) throw std::invalid_argument("size: must be positive");
  if (C > std::numeric_limits<int32_t>::max() || h > std::numeric_limits<int32_t>::max() ||
      w > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("logits: dimensions must fit in int32");
  if (confidence) {
    confidence->check_rank(3, "confidence");
    confidence->check_dtype(DType::kFloat32, "confidence");
    if (confidence->shape != labels.shape)
      throw std::invalid_argument("confidence: shape differs from labels");
  }
  if (max_value) {
    max_value->check_rank(3, "max_value");
    max_value->check_dtype(DType::kFloat32, "max_value");
    if (max_value->shape != labels.shape)
      throw std::invalid_argument("max_value: shape differs from labels");
  }
  if (N == 0) return;
  // Below ~2^18 channel-pixel updates per thread, forking OpenMP's (spinning) pool costs more than it
  // saves; a worker of fastseg's own pool must be woken, so there ~2^20 for the full computation.
  // Labels-only upsampling (the cell shortcut) costs about C updates per input pixel and one label
  // per output pixel, not C per output pixel; there ~2^18 on either pool: it runs right after the
  // network, whose threads have just left the cores awake, and a late worker's share is the
  // caller's (common/threads.h), so the second thread costs little and pays from video-sized frames.
  const bool cells = !confidence && !max_value && H * W >= 2 * h * w;
  const int64_t work = cells ? N * (C * h * w + H * W) : N * C * H * W;
  const int threads =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, work >> (own_threads && !cells ? 20 : 18))));
  const Plan plan(C, h, w, H, W, N, align_corners, threads);
  switch (logits.dtype) {
    case DType::kFloat32:
      return run_labels<float>(plan, logits, labels, confidence, max_value, threads, own_threads);
    case DType::kFloat16:
      return run_labels<Half>(plan, logits, labels, confidence, max_value, threads, own_threads);
    case DType::kBFloat16:
      return run_labels<BFloat16>(plan, logits, labels, confidence, max_value, threads, own_threads);
    default: logits.unsupported_dtype("logits");
  }
}

int64_t upsample_argmax_workspace_bytes(int64_t C, int64_t h, int64_t w, int64_t H, int64_t W,
                                        bool align_corners, int num_threads) {
  const Plan plan(C, h, w, H, W, 1, align_corners, std::max(1, num_threads));
  return plan.shared_bytes() + std::max(1, num_threads) * plan.thread_bytes();
}

}  // namespace fastseg::cpu
