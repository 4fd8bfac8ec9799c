// Winograd F(4x4, 3x3) and F(6x6, 3x3) input and output transforms (see winograd.h), tiles shared out over
// `parallel_region` (torch's OpenMP pool between torch ops, fastseg's sleeping pool around another
// runtime's; common/threads.h), eight channels at a time in GCC vector registers (a scalar path for
// the channels left over).
#include "cpu/winograd.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common/threads.h"

namespace fastseg::cpu::winograd {

namespace {

typedef float v8 __attribute__((vector_size(32)));
constexpr int kLanes = 8;

template <typename T>
inline T load(const float* p) {
  if constexpr (sizeof(T) == sizeof(float)) {
    return *p;
  } else {
    T v;
    __builtin_memcpy(&v, p, sizeof(T));
    return v;
  }
}

template <typename T>
inline void store(float* p, T v) {
  if constexpr (sizeof(T) == sizeof(float)) {
    *p = v;
  } else {
    __builtin_memcpy(p, &v, sizeof(T));
  }
}

// F(4, 3): B^T applied to one line of six values (interpolation points 0, 1, -1, 2, -2, inf).
template <typename T>
inline void bt_line(const T d[6], T out[6], std::integral_constant<int, 4>) {
  out[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
  out[1] = -4.0f * (d[1] + d[2]) + d[3] + d[4];
  out[2] = 4.0f * (d[1] - d[2]) - d[3] + d[4];
  out[3] = 2.0f * (d[3] - d[1]) - d[2] + d[4];
  out[4] = 2.0f * (d[1] - d[3]) - d[2] + d[4];
  out[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
}

// F(4, 3): A^T applied to one line of six values.
template <typename T>
inline void at_line(const T m[6], T out[4], std::integral_constant<int, 4>) {
  const T s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  out[0] = m[0] + s12 + s34;
  out[1] = d12 + 2.0f * d34;
  out[2] = s12 + 4.0f * s34;
  out[3] = d12 + 8.0f * d34 + m[5];
}

// F(6, 3): B^T on eight values (points 0, 1, -1, 1/2, -1/2, 2, -2, inf), rows paired as even +- odd.
template <typename T>
inline void bt_line(const T d[8], T out[8], std::integral_constant<int, 6>) {
  out[0] = d[0] - d[6] + 5.25f * (d[4] - d[2]);
  out[7] = d[7] - d[1] + 5.25f * (d[3] - d[5]);
  T even = d[2] + d[6] - 4.25f * d[4], odd = d[1] + d[5] - 4.25f * d[3];
  out[1] = even + odd;
  out[2] = even - odd;
  even = d[6] + 0.25f * d[2] - 1.25f * d[4];
  odd = 0.5f * d[1] - 2.5f * d[3] + 2.0f * d[5];
  out[3] = even + odd;
  out[4] = even - odd;
  even = d[6] + 4.0f * d[2] - 5.0f * d[4];
  odd = 2.0f * d[1] - 2.5f * d[3] + 0.5f * d[5];
  out[5] = even + odd;
  out[6] = even - odd;
}

// F(6, 3): A^T on eight values.
template <typename T>
inline void at_line(const T m[8], T out[6], std::integral_constant<int, 6>) {
  const T s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  const T s56 = m[5] + m[6], d56 = m[5] - m[6];
  out[0] = m[0] + s12 + s34 + s56;
  out[1] = d12 + 2.0f * d34 + 0.5f * d56;
  out[2] = s12 + 4.0f * s34 + 0.25f * s56;
  out[3] = d12 + 8.0f * d34 + 0.125f * d56;
  out[4] = s12 + 16.0f * s34 + 0.0625f * s56;
  out[5] = d12 + 32.0f * d34 + 0.03125f * d56 + m[7];
}

struct Geometry {
  int64_t H, W, C, sn, sh, sw;  // image size, channels and element strides of an NHWC buffer
};

Geometry nhwc(const Buffer& b, const char* name) {
  b.check_rank(4, name);
  if (b.strides[3] != 1 && b.shape[3] > 1)
    throw std::invalid_argument(std::string(name) + ": channels must be contiguous (NHWC)");
  return {b.shape[1], b.shape[2], b.shape[3], b.strides[0], b.strides[1], b.strides[2]};
}

void check_points(const Buffer& b, int64_t points, int64_t channels, int64_t tiles, const char* name) {
  b.check_rank(3, name);
  if (b.shape[0] != points || b.shape[1] < tiles || b.shape[2] != channels || (b.strides[2] != 1 && channels > 1))
    throw std::invalid_argument(std::string(name) + ": expected [36, >= tiles, channels] with contiguous channels");
}

// One tile, channels [c, c + lanes of T): gather the 6x6 lattice, transform, scatter 36 points.
template <int M, typename T>
inline void input_tile(const float* x, const Geometry& g, const Tile& t, int64_t d, int64_t c,
                       float* v, int64_t pstride) {
  constexpr int kIn = M + 2;
  const std::integral_constant<int, M> f;
  T rows[kIn][kIn];
  for (int i = 0; i < kIn; ++i) {
    const int64_t y = t.y + (i - 1) * d;
    const bool row_in = y >= 0 && y < g.H;
    for (int j = 0; j < kIn; ++j) {
      const int64_t xx = t.x + (j - 1) * d;
      rows[i][j] = row_in && xx >= 0 && xx < g.W ? load<T>(x + t.n * g.sn + y * g.sh + xx * g.sw + c) : T{};
    }
  }
  T cols[kIn][kIn];  // B^T d: transform down each column
  for (int j = 0; j < kIn; ++j) {
    T line[kIn], out[kIn];
    for (int i = 0; i < kIn; ++i) line[i] = rows[i][j];
    bt_line(line, out, f);
    for (int i = 0; i < kIn; ++i) cols[i][j] = out[i];
  }
  for (int i = 0; i < kIn; ++i) {  // (B^T d) B: then along each row
    T out[kIn];
    bt_line(cols[i], out, f);
    for (int j = 0; j < kIn; ++j) store(v + (i * kIn + j) * pstride + c, out[j]);
  }
}

// The activations this transform fuses, as the ints its inner loops compare against.
constexpr int kNone = static_cast<int>(Activation::kNone);
constexpr int kRelu = static_cast<int>(Activation::kRelu);
constexpr int kRelu6 = static_cast<int>(Activation::kRelu6);

template <typename T>
inline T activate(T y, int activation) {
  if (activation == kRelu || activation == kRelu6) {
    if constexpr (sizeof(T) == sizeof(float)) {
      y = std::max(y, 0.0f);
      if (activation == kRelu6) y = std::min(y, 6.0f);
    } else {
      const T zero = {}, six = zero + 6.0f;
      y = y > zero ? y : zero;
      if (activation == kRelu6) y = y < six ? y : six;
    }
  }
  return y;
}

template <int M, typename T>
inline void output_tile(const float* m, int64_t pstride, const Geometry& g, const Tile& t, int64_t d,
                        int64_t k, const float* bias, int activation, float* out) {
  constexpr int kIn = M + 2;
  const std::integral_constant<int, M> f;
  T half[M][kIn];  // A^T M: down each column
  for (int j = 0; j < kIn; ++j) {
    T line[kIn], res[M];
    for (int i = 0; i < kIn; ++i) line[i] = load<T>(m + (i * kIn + j) * pstride + k);
    at_line(line, res, f);
    for (int r = 0; r < M; ++r) half[r][j] = res[r];
  }
  const T b = bias ? load<T>(bias + k) : T{};
  for (int r = 0; r < M; ++r) {
    const int64_t y = t.y + r * d;
    if (y >= g.H) break;
    T res[M];
    at_line(half[r], res, f);
    for (int s = 0; s < M; ++s) {
      const int64_t xx = t.x + s * d;
      if (xx >= g.W) break;
      store(out + t.n * g.sn + y * g.sh + xx * g.sw + k, activate<T>(res[s] + b, activation));
    }
  }
}

// tile(t) for t in [t0, t1), in one contiguous block per thread (tiles cost alike).
template <typename F>
void for_tiles(int64_t t0, int64_t t1, int threads, bool own_threads, F&& tile) {
  parallel_region(threads, own_threads, [&](int i) {
    const int64_t n = t1 - t0;
    for (int64_t t = t0 + n * i / threads, end = t0 + n * (i + 1) / threads; t < end; ++t) tile(t);
  });
}

int clamp_threads(int num_threads, int64_t tiles) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, tiles)));
}

}  // namespace

void check_tile_size(int m) {
  if (m != 4 && m != 6) throw std::invalid_argument("winograd: tile size must be 4 or 6");
}

std::vector<Tile> plan(int64_t N, int64_t H, int64_t W, int64_t d, int m) {
  check_tile_size(m);
  if (N < 1 || H < 1 || W < 1 || d < 1) throw std::invalid_argument("winograd.plan: sizes and dilation must be >= 1");
  std::vector<Tile> tiles;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ry = 0; ry < std::min(d, H); ++ry) {
      const int64_t rows = (H - ry + d - 1) / d;  // outputs of this residue's sub-grid
      for (int64_t rx = 0; rx < std::min(d, W); ++rx) {
        const int64_t cols = (W - rx + d - 1) / d;
        for (int64_t ty = 0; ty < rows; ty += m)
          for (int64_t tx = 0; tx < cols; tx += m)
            tiles.push_back({static_cast<int32_t>(n), static_cast<int32_t>(ry + ty * d),
                             static_cast<int32_t>(rx + tx * d)});
      }
    }
  return tiles;
}

template <int M>
void run_input(const float* xp, const Geometry& g, const std::vector<Tile>& tiles, int64_t d, int64_t t0,
               int64_t t1, float* vp, int64_t pstride, int64_t tstride, int threads, bool own_threads) {
  const int64_t vec_end = g.C / kLanes * kLanes;
  for_tiles(t0, t1, threads, own_threads, [&](int64_t t) {
    float* vt = vp + (t - t0) * tstride;
    for (int64_t c = 0; c < vec_end; c += kLanes) input_tile<M, v8>(xp, g, tiles[t], d, c, vt, pstride);
    for (int64_t c = vec_end; c < g.C; ++c) input_tile<M, float>(xp, g, tiles[t], d, c, vt, pstride);
  });
}

void input_transform(const Buffer& x, const Buffer& v, int64_t dilation, int m, int64_t t0, int64_t t1,
                     int num_threads, bool own_threads) {
  x.check_dtype(DType::kFloat32, "winograd.input_transform: x");
  v.check_dtype(DType::kFloat32, "winograd.input_transform: v");
  const Geometry g = nhwc(x, "winograd.input_transform: x");
  const std::vector<Tile> tiles = plan(x.shape[0], g.H, g.W, dilation, m);
  if (t0 < 0 || t1 > static_cast<int64_t>(tiles.size()) || t0 >= t1)
    throw std::invalid_argument("winograd.input_transform: tile range out of bounds");
  check_points(v, (m + 2) * (m + 2), g.C, t1 - t0, "winograd.input_transform: v");
  const int threads = clamp_threads(num_threads, t1 - t0);
  if (m == 4)
    run_input<4>(x.data<float>(), g, tiles, dilation, t0, t1, v.data<float>(), v.strides[0], v.strides[1], threads,
                 own_threads);
  else
    run_input<6>(x.data<float>(), g, tiles, dilation, t0, t1, v.data<float>(), v.strides[0], v.strides[1], threads,
                 own_threads);
}

template <int M>
void run_output(const float* mp, int64_t pstride, int64_t tstride, const Geometry& g,
                const std::vector<Tile>& tiles, int64_t d, int64_t t0, int64_t t1, const float* bias,
                int activation, float* op, int threads, bool own_threads) {
  const int64_t vec_end = g.C / kLanes * kLanes;
  for_tiles(t0, t1, threads, own_threads, [&](int64_t t) {
    const float* mt = mp + (t - t0) * tstride;
    for (int64_t k = 0; k < vec_end; k += kLanes)
      output_tile<M, v8>(mt, pstride, g, tiles[t], d, k, bias, activation, op);
    for (int64_t k = vec_end; k < g.C; ++k)
      output_tile<M, float>(mt, pstride, g, tiles[t], d, k, bias, activation, op);
  });
}

void output_transform(const Buffer& m, const Buffer& out, const float* bias, Activation fused,
                      int64_t dilation, int tile, int64_t t0, int64_t t1, int num_threads,
                      bool own_threads) {
  m.check_dtype(DType::kFloat32, "winograd.output_transform: m");
  out.check_dtype(DType::kFloat32, "winograd.output_transform: out");
  const int activation = static_cast<int>(fused);
  const Geometry g = nhwc(out, "winograd.output_transform: out");
  const std::vector<Tile> tiles = plan(out.shape[0], g.H, g.W, dilation, tile);
  if (t0 < 0 || t1 > static_cast<int64_t>(tiles.size()) || t0 >= t1)
    throw std::invalid_argument("winograd.output_transform: tile range out of bounds");
  check_points(m, (tile + 2) * (tile + 2), g.C, t1 - t0, "winograd.output_transform: m");
  if (activation < kNone || activation > kRelu6)
    throw std::invalid_argument("winograd.output_transform: fuses only none, relu and relu6");
  const int threads = clamp_threads(num_threads, t1 - t0);
  if (tile == 4)
    run_output<4>(m.data<float>(), m.strides[0], m.strides[1], g, tiles, dilation, t0, t1, bias, activation,
                  out.data<float>(), threads, own_threads);
  else
    run_output<6>(m.data<float>(), m.strides[0], m.strides[1], g, tiles, dilation, t0, t1, bias, activation,
                  out.data<float>(), threads, own_threads);
}

}  // namespace fastseg::cpu::winograd
