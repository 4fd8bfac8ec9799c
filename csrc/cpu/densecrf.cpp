// Fully connected CRF on the CPU: pydensecrf's algorithm (see shared/notes/densecrf.md), built for
// speed and for several cores.
//
//  * Each pairwise term's lattice is built once per image, on one thread (the terms of an image
//    build concurrently, no barrier inside), and serves both normalisation passes and every
//    iteration: per simplex corner the dense vertex id, a splat weight (barycentric weight times the
//    symmetric normalisation) and a slice weight (with alpha and the Potts weight folded in); per
//    vertex its 2 (d+1) blur neighbours. Features come from per-value tables (the same divisions
//    as pydensecrf), and a simplex cache skips the hash table for simplices seen shortly before.
//    The hash table is the shared one (common/permutohedral.h, the CUDA build's code).
//  * Mean field makes one pass over the pixels per iteration: slice both terms, softmax, and splat
//    the new Q into both terms' vertex buffers (a scatter in pixel order), so Q is never stored;
//    then the terms blur (one task per term). Pixels are split into a fixed number of chunks (by
//    image size only), each splatting into its own buffer, added in chunk order: the same result
//    for any thread count, two barriers an iteration.
//  * Label rows are padded to a multiple of 8 and handled as 8-float vectors (GCC vector
//    extensions), so a row of up to 16 labels is one cache line and the per-pixel work stays in
//    registers.
// Float operations do not trap here (no FP exceptions are enabled), and saying so lets g++ if-convert
// and vectorise the exp/log/softmax loops; it changes no result. (First, so the whole file agrees and
// inlining is not blocked by differing options.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "cpu/densecrf.h"

#include <omp.h>

#include <algorithm>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/meanfield.h"
#include "common/permutohedral.h"

namespace fastseg {
namespace crf {
namespace {

// FASTSEG_CRF_PROFILE=1 prints the process CPU time of each stage to stderr (development aid; CPU
// time because the shared machines make wall time too noisy to profile with).
inline double cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}
struct StageTimer {
  bool on = std::getenv("FASTSEG_CRF_PROFILE") != nullptr;
  double t = cpu_ms();
  void operator()(const char* stage) {
    if (!on) return;
    const double now = cpu_ms();
    std::fprintf(stderr, "  crf %-24s %8.2f ms\n", stage, now - t);
    t = now;
  }
};

using lattice::HashTable;
using lattice::kEmpty;
using lattice::kMaxDim;

// Uninitialised storage (std::vector would zero what is overwritten anyway), 64-byte aligned so a
// padded label row of 16 floats is exactly one cache line.
template <typename T>
struct Array {
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T[], Free> p;
  int64_t n = 0;
  void resize(int64_t size) {
    if (size > n) {
      const size_t bytes = (static_cast<size_t>(size) * sizeof(T) + 63) / 64 * 64;
      p.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
      if (!p) throw std::bad_alloc();
      n = size;
    }
  }
  void release() { p.reset(); n = 0; }
  T* data() const { return p.get(); }
  T& operator[](int64_t i) const { return p[i]; }
};

// Eight floats (one AVX register) with GCC's vector extensions: label rows are handled as lp / 8 of
// these, so the per-pixel loops stay in vector registers (plain loops over 12 or 16 floats got
// scalarised and spilled through the stack). Label rows are 32-byte aligned (lp is a multiple of 8).
typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
inline v8f splat8(float x) { return v8f{x, x, x, x, x, x, x, x}; }
inline v8f load8(const float* p) { return *reinterpret_cast<const v8f*>(p); }
inline void store8(float* p, v8f v) { *reinterpret_cast<v8f*>(p) = v; }
inline v8f select8(v8i mask, v8f a, v8f b) { return mask ? a : b; }

typedef float v4f __attribute__((vector_size(16)));
// Horizontal max and sum of eight lanes by halving (a fixed order, so results are reproducible).
inline float hmax8(v8f v) {
  v4f m = __builtin_shufflevector(v, v, 0, 1, 2, 3);
  const v4f h = __builtin_shufflevector(v, v, 4, 5, 6, 7);
  m = m > h ? m : h;
  const v4f m2 = __builtin_shufflevector(m, m, 2, 3, 0, 1);
  m = m > m2 ? m : m2;
  const v4f m1 = __builtin_shufflevector(m, m, 1, 0, 3, 2);
  m = m > m1 ? m : m1;
  return m[0];
}
inline float hsum8(v8f v) {
  v4f s = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  s = s + __builtin_shufflevector(s, s, 2, 3, 0, 1);
  s = s + __builtin_shufflevector(s, s, 1, 0, 3, 2);
  return s[0];
}

inline v8i as_int8(v8f v) { return reinterpret_cast<const v8i&>(v); }
inline v8f as_float8(v8i v) { return reinterpret_cast<const v8f&>(v); }

// lattice::log_approx on eight lanes (the same operations), for positive normal x.
inline v8f log8(v8f x) {
  const v8i bits = as_int8(x);
  v8f m = as_float8((bits & 0x007fffff) | 0x3f000000);
  const v8i small = m < splat8(0.707106781186547524f);  // all ones where m < sqrt(1/2)
  const v8f e = __builtin_convertvector(((bits >> 23) & 0xff) - 126 + small, v8f);
  m = m + as_float8(as_int8(m) & small) - 1.0f;
  const v8f z = m * m;
  v8f y = splat8(7.0376836292e-2f);
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

// lattice::exp_approx on eight lanes (the same operations).
inline v8f exp8(v8f x) {
  v8f xc = select8(x < splat8(-80.0f), splat8(-80.0f), x);
  xc = select8(xc > splat8(88.0f), splat8(88.0f), xc);
  const v8f n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  v8f r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v8f y = splat8(1.9875691500e-4f);
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
  return y * reinterpret_cast<const v8f&>(e);
}

inline void chunk(int64_t n, int t, int T, int64_t& b, int64_t& e) {
  b = n * t / T;
  e = n * (t + 1) / T;
}

inline uint64_t pow2_at_least(uint64_t v) {
  uint64_t p = 64;
  while (p < v) p <<= 1;
  return p;
}

// Pixels of an image are split into this many fixed chunks (by pixel count only, never by thread
// count): each chunk splats into its own vertex buffer and the buffers are added in chunk order, so
// results are bit-identical whatever the number of threads.
inline int pixel_chunks(int64_t N) { return N >= (int64_t{1} << 15) ? 2 : 1; }

struct Lattice {
  int d = 0, d1 = 0;
  int64_t N = 0;
  int M = 0;
  Array<int> off;    // N * d1: dense vertex id of each simplex corner
  Array<float> sw;   // N * d1: slice weight = bary * alpha * norm * compat
  Array<float> spw;  // N * d1: splat weight = bary * norm
  Array<int> nbr;    // d1 * M * 2: blur neighbours per axis (M = none)
};

// Features of one term read from tables: x / sx, y / sy and (uint8 channels) v / divisor, each the
// same float division pydensecrf does, done once per distinct value instead of once per pixel.
struct FeatureTables {
  std::vector<float> fx, fy, lut;  // lut: K * 256 for uint8 channels
  FeatureTables(const Term& t, int64_t H, int64_t W) {
    if (t.use_xy) {
      fx.resize(W);
      fy.resize(H);
      for (int64_t x = 0; x < W; ++x) fx[x] = static_cast<float>(x) / t.sx;
      for (int64_t y = 0; y < H; ++y) fy[y] = static_cast<float>(y) / t.sy;
    }
    if (t.channel_type == kUInt8) {
      lut.resize(static_cast<size_t>(t.K) * 256);
      for (int c = 0; c < t.K; ++c)
        for (int v = 0; v < 256; ++v) lut[c * 256 + v] = static_cast<float>(v) / t.divisor[c];
    }
  }
  void features(const Term& t, int64_t b, int64_t y, int64_t x, float* f) const {
    int k = 0;
    if (t.use_xy) {
      f[k++] = fx[x];
      f[k++] = fy[y];
    }
    const int64_t base = b * t.cs[0] + y * t.cs[1] + x * t.cs[2];
    if (t.channel_type == kUInt8) {
      const uint8_t* ch = static_cast<const uint8_t*>(t.channels) + base;
      for (int c = 0; c < t.K; ++c) f[k++] = lut[c * 256 + ch[c * t.cs[3]]];
    } else if (t.channel_type == kFloat32) {
      const float* ch = static_cast<const float*>(t.channels) + base;
      for (int c = 0; c < t.K; ++c) f[k++] = ch[c * t.cs[3]] / t.divisor[c];
    }
  }
};

// A small direct-mapped cache simplex (remainder-0 point and ranks) -> vertex ids in front of the
// hash table: natural images have far fewer simplices than pixels, and neighbouring pixels (and
// neighbouring rows) mostly fall in simplices seen shortly before.
template <int D1>
struct SimplexCache {
  static constexpr int kEntries = 4096;
  struct Entry {
    int rem0[D1], rank[D1], ids[D1];
    bool valid;
  };
  std::vector<Entry> e;
  SimplexCache() : e(kEntries) {
    for (auto& x : e) x.valid = false;
  }
};

template <int D>
constexpr int cache_d1 = D > 0 ? D + 1 : kMaxDim + 1;

// Locates pixels [start, end) of image b and inserts their simplices' vertices (one thread).
// Returns the first pixel whose insert ran out of ids (the table must grow), or `end`.
template <int D>
int64_t insert_pixels(const Term& term, const FeatureTables& ft, int64_t b, int64_t W, int64_t start,
                      int64_t end, const float* scale, int rounding, const HashTable& table, int* off,
                      float* bary_all, SimplexCache<cache_d1<D>>& cache) {
  const int d = D > 0 ? D : term.dim();
  const int d1 = d + 1;
  constexpr int kEntries = SimplexCache<cache_d1<D>>::kEntries;
  constexpr int kD1 = cache_d1<D>;
  int64_t y = start / W, x = start % W;
  const typename SimplexCache<kD1>::Entry* last = nullptr;
  for (int64_t p = start; p < end; ++p) {
    float f[kMaxDim];
    ft.features(term, b, y, x, f);
    if (++x == W) { x = 0; ++y; }
    int rem0[kMaxDim + 1], rank[kMaxDim + 1];
    float bary[kMaxDim + 1];
    if (!lattice::locate<D>(f, scale, d, rounding, rem0, rank, bary))
      throw std::invalid_argument(
          "densecrf: a feature is NaN, infinite or too large for the lattice (a scale such as srgb or "
          "sxy, or a feature channel, is far out of range)");
    for (int r = 0; r < d1; ++r) bary_all[p * d1 + r] = bary[r];
    // The previous pixel's simplex first (in L1), then the cache.
    bool same_last = last != nullptr;
    for (int i = 0; i < d1 && same_last; ++i) same_last = rem0[i] == last->rem0[i] && rank[i] == last->rank[i];
    if (same_last) {
      for (int r = 0; r < d1; ++r) off[p * d1 + r] = last->ids[r];
      continue;
    }
    uint32_t h = 0;
    for (int i = 0; i < d1; ++i) h = (h ^ static_cast<uint32_t>(rem0[i] * (d1 + 1) + rank[i])) * 0x9E3779B1u;
    auto& e = cache.e[(h >> 12) & (kEntries - 1)];
    last = &e;
    bool same = e.valid;
    for (int i = 0; i < d1 && same; ++i) same = rem0[i] == e.rem0[i] && rank[i] == e.rank[i];
    if (same) {
      for (int r = 0; r < d1; ++r) off[p * d1 + r] = e.ids[r];
      continue;
    }
    e.valid = false;
    // All d+1 keys first, their slots prefetched, so the (cache-missing) probes overlap.
    int keys[kD1][kMaxDim > 0 ? kMaxDim : 1];
    uint32_t hashes[kD1];
    for (int r = 0; r < d1; ++r) {
      lattice::vertex_key(rem0, rank, d, r, keys[r]);
      hashes[r] = lattice::hash_key(keys[r], d);
      __builtin_prefetch(table.slots + (hashes[r] & table.mask));
    }
    for (int r = 0; r < d1; ++r) {
      const int id = lattice::hash_insert_hashed(table, keys[r], hashes[r]);
      if (id < 0) return p;
      off[p * d1 + r] = id;
      e.ids[r] = id;
    }
    for (int i = 0; i < d1; ++i) {
      e.rem0[i] = rem0[i];
      e.rank[i] = rank[i];
    }
    e.valid = true;
  }
  return end;
}

// Builds the lattice of `term` for image b and the symmetric normalisation it implies, on the
// calling thread (with several threads, the terms of an image build concurrently).
template <int D>
void build_lattice_d(Lattice& L, const Term& term, int64_t b, int64_t H, int64_t W, int rounding) {
  const int d = D > 0 ? D : term.dim();  // compile-time for the usual dimensions: loops unroll
  const int d1 = d + 1;
  const int64_t N = H * W;
  L.d = d;
  L.d1 = d1;
  L.N = N;
  float scale[kMaxDim];
  lattice::scale_factors(d, scale);
  L.off.resize(N * d1);
  L.spw.resize(N * d1);  // barycentric weights until the normalisation is known
  int* off = L.off.data();
  float* bary_all = L.spw.data();
  const FeatureTables ft(term, H, W);
  std::unique_ptr<SimplexCache<cache_d1<D>>> cache(new SimplexCache<cache_d1<D>>());

  StageTimer timer;
  // 1. Locate every pixel's simplex and insert its d+1 vertices. The table starts small (natural
  //    images have few vertices, and a small table stays in cache) and grows 4x when it runs out of
  //    ids (ids survive the rehash, so the pixels done so far stay valid).
  const int64_t max_ids = N * d1;
  uint64_t cap = pow2_at_least(std::max<uint64_t>(4096, static_cast<uint64_t>(N) / 8));
  auto limit_of = [&](uint64_t c) { return static_cast<int>(std::min<uint64_t>(c / 2, static_cast<uint64_t>(max_ids))); };
  Array<int> slots, keys;
  slots.resize(static_cast<int64_t>(cap));
  keys.resize(static_cast<int64_t>(limit_of(cap)) * std::max(d, 1));
  int count = 0;
  auto clear = [&](int* p, int64_t slots_n) { std::fill(p, p + slots_n, kEmpty); };
  clear(slots.data(), static_cast<int64_t>(cap));
  HashTable table{slots.data(), keys.data(), &count, static_cast<uint32_t>(cap - 1), d, limit_of(cap)};
  for (int64_t start = 0; start < N;) {
    start = insert_pixels<D>(term, ft, b, W, start, N, scale, rounding, table, off, bary_all, *cache);
    if (start == N) break;
    // Out of ids: every id below the limit is a complete vertex. Grow 4x, rehash, go on.
    const int have = table.limit;
    cap = std::min(cap * 4, pow2_at_least(2 * static_cast<uint64_t>(max_ids)));
    Array<int> new_slots, new_keys;
    new_slots.resize(static_cast<int64_t>(cap));
    new_keys.resize(static_cast<int64_t>(limit_of(cap)) * std::max(d, 1));
    clear(new_slots.data(), static_cast<int64_t>(cap));
    std::memcpy(new_keys.data(), keys.data(), sizeof(int) * static_cast<size_t>(have) * d);
    slots = std::move(new_slots);
    keys = std::move(new_keys);
    count = have;
    table = HashTable{slots.data(), keys.data(), &count, static_cast<uint32_t>(cap - 1), d, limit_of(cap)};
    for (int64_t id = 0; id < have; ++id) lattice::hash_insert(table, keys.data() + id * d, static_cast<int>(id));
  }
  cache.reset();
  const int64_t M = count;
  L.M = static_cast<int>(M);
  timer("locate+insert");

  // 2. Blur neighbours: along axis j, key - 1 with +d on j (n1) and key + 1 with -d on j (n2).
  L.nbr.resize(static_cast<int64_t>(d1) * M * 2);
  {
    int* nbr = L.nbr.data();
    for (int64_t v = 0; v < M; ++v) {
      const int* key = keys.data() + v * d;
      int nk[kMaxDim];
      for (int j = 0; j < d1; ++j) {
        for (int side = 0; side < 2; ++side) {
          lattice::neighbour_key(key, d, j, side == 0 ? -1 : 1, nk);
          const int id = lattice::hash_find(table, nk);
          nbr[(j * M + v) * 2 + side] = id < 0 ? static_cast<int>(M) : id;
        }
      }
    }
  }
  slots.release();
  keys.release();
  timer("neighbours");

  // 3. Normalisation: n = K * 1 through the lattice (splat in pixel order), norm = 1 / sqrt(n + 1e-20).
  const float alpha = lattice::slice_alpha(d);
  {
    std::vector<float> a(M + 1, 0.f), c(M + 1, 0.f);
    for (int64_t k = 0; k < N * d1; ++k) a[off[k]] += bary_all[k];
    for (int j = 0; j < d1; ++j) {
      const int* nb = L.nbr.data() + static_cast<int64_t>(j) * M * 2;
      for (int64_t v = 0; v < M; ++v) c[v] = a[v] + 0.5f * (a[nb[2 * v]] + a[nb[2 * v + 1]]);
      std::swap(a, c);
    }
    // 4. Fold the normalisation (both sides), alpha and the Potts weight into the weights.
    L.sw.resize(N * d1);
    for (int64_t p = 0; p < N; ++p) {
      float s = 0.f;
      for (int r = 0; r < d1; ++r) s += bary_all[p * d1 + r] * a[off[p * d1 + r]] * alpha;
      const float norm = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s) + 1e-20));
      for (int r = 0; r < d1; ++r) {
        const float bw = bary_all[p * d1 + r];
        L.sw[p * d1 + r] = bw * alpha * norm * term.compat;
        L.spw[p * d1 + r] = bw * norm;  // in place of bary
      }
    }
  }
  timer("normalise");
  if (timer.on) std::fprintf(stderr, "  crf lattice d=%d: %lld vertices for %lld pixels\n", d, (long long)M, (long long)N);
}

void build_lattice(Lattice& L, const Term& term, int64_t b, int64_t H, int64_t W, int rounding) {
  switch (term.dim()) {  // the common dimensions get unrolled lattice code
    case 2: build_lattice_d<2>(L, term, b, H, W, rounding); break;
    case 5: build_lattice_d<5>(L, term, b, H, W, rounding); break;
    default: build_lattice_d<0>(L, term, b, H, W, rounding);
  }
}

// Per-term vertex buffers of the mean field: `chunks` splat targets (at least 2: after the merge
// they are the blur's ping-pong scratch) and the blurred result the slice reads. Row M is the
// "no neighbour" row and stays 0.
struct TermBuffers {
  std::vector<Array<float>> splat;
  Array<float> blurred;
};

// Raw pointers of one term for the pixel pass (hoisted out of the per-pixel loop).
struct TermView {
  const int* off;
  const float* sw;
  const float* spw;
  const float* blurred;
  float* splat;
  int d1;
};

// a += sum over the D1 corners of slice weight * vertex row (D1 = 0: d1 at run time).
template <int D1, int LP8>
inline void slice_corners(const TermView& tv, int64_t p, v8f* a, int n8, int lp) {
  const int d1 = D1 > 0 ? D1 : tv.d1;
  const int* o = tv.off + p * d1;
  const float* w = tv.sw + p * d1;
  for (int r = 0; r < d1; ++r) {
    const float* v = tv.blurred + static_cast<int64_t>(o[r]) * lp;
    const v8f wr = splat8(w[r]);
    for (int i = 0; i < (LP8 > 0 ? LP8 : n8); ++i) a[i] += wr * load8(v + 8 * i);
  }
}

// Vertex rows += splat weight * q over the D1 corners.
template <int D1, int LP8>
inline void splat_corners(const TermView& tv, int64_t p, const v8f* q, int n8, int lp) {
  const int d1 = D1 > 0 ? D1 : tv.d1;
  const int* o = tv.off + p * d1;
  const float* w = tv.spw + p * d1;
  for (int r = 0; r < d1; ++r) {
    float* v = tv.splat + static_cast<int64_t>(o[r]) * lp;
    const v8f wr = splat8(w[r]);
    for (int i = 0; i < (LP8 > 0 ? LP8 : n8); ++i) store8(v + 8 * i, load8(v + 8 * i) + wr * q[i]);
  }
}

// One pass over pixels [p0, p1) of image b: logits A = -U + sum_t slice_t, Q = softmax(A), then
// splat Q into every term's chunk buffer, or write Q (and labels) out on the last iteration. On the
// first pass -U comes from the probabilities (and is kept) and nothing is sliced.
// TWO_TERMS: pydensecrf's usual pair (a 2-D Gaussian term, then a 5-D bilateral one) with their
// corner counts fixed at compile time, so the per-pixel term loop disappears.
template <int LP8, bool TWO_TERMS>
void pixel_pass(const Problem& P, int64_t b, int64_t p0, int64_t p1, const std::vector<const Lattice*>& lats,
                std::vector<TermBuffers>& bufs, int chunk, float* U, int lp_runtime, bool first, bool splat,
                bool out, int& bad_out) {
  const int n8 = LP8 > 0 ? LP8 : lp_runtime / 8;
  const int lp = n8 * 8;
  const int64_t W = P.W, C = P.C;
  const int T = static_cast<int>(lats.size());
  v8f a[LP8 > 0 ? LP8 : 32];  // at most 256 labels
  int bad = 0;
  std::vector<TermView> tv(T);
  for (int t = 0; t < T; ++t)
    tv[t] = TermView{lats[t]->off.data(), lats[t]->sw.data(), lats[t]->spw.data(), bufs[t].blurred.data(),
                     bufs[t].splat[P.atomic_splat ? 0 : chunk].data(), lats[t]->d1};
  int64_t y = p0 / W, x = p0 % W;
  for (int64_t p = p0; p < p1; ++p, ++x) {
    if (x == W) { x = 0; ++y; }
    float* u = U + p * lp;
    if (first) {
      alignas(32) float row[LP8 > 0 ? LP8 * 8 : 256];
      const float* src = P.probs + b * P.ps[0] + y * P.ps[2] + x * P.ps[3];
      for (int64_t c = 0; c < C; ++c) row[c] = src[c * P.ps[1]];
      for (int k = static_cast<int>(C); k < lp; ++k) row[k] = 1.f;
      if (P.logits) {
        for (int64_t c = 0; c < C; ++c) bad |= !(std::fabs(row[c]) <= 3.4e38f);
      } else {
        for (int64_t c = 0; c < C; ++c) bad |= !(row[c] >= 0.f);
      }
      for (int i = 0; i < n8; ++i) {
        a[i] = load8(row + 8 * i);
        if (!P.logits) {  // meanfield::neg_unary: log(clip(p, 1e-5, 1))
          a[i] = select8(a[i] < splat8(1e-5f), splat8(1e-5f), a[i]);
          a[i] = select8(a[i] > splat8(1.0f), splat8(1.0f), a[i]);
          a[i] = log8(a[i]);
        }
        const v8i lane = v8i{0, 1, 2, 3, 4, 5, 6, 7} + 8 * i;
        a[i] = select8(lane < static_cast<int>(C), a[i], splat8(meanfield::kPadLogit));
        store8(u + 8 * i, a[i]);
      }
    } else {
      for (int i = 0; i < n8; ++i) a[i] = load8(u + 8 * i);
      if (TWO_TERMS) {
        slice_corners<3, LP8>(tv[0], p, a, n8, lp);
        slice_corners<6, LP8>(tv[1], p, a, n8, lp);
      } else {
        for (int t = 0; t < T; ++t) {
          switch (tv[t].d1) {  // the usual terms (2-D positions, positions and RGB) unrolled
            case 3: slice_corners<3, LP8>(tv[t], p, a, n8, lp); break;
            case 6: slice_corners<6, LP8>(tv[t], p, a, n8, lp); break;
            default: slice_corners<0, LP8>(tv[t], p, a, n8, lp);
          }
        }
      }
    }
    // Softmax: subtract the max, exponentiate, divide by the sum (max and sum as vector reductions).
    v8f mv = a[0];
    for (int i = 1; i < n8; ++i) mv = select8(a[i] > mv, a[i], mv);
    const float m = hmax8(mv);
    v8f sv = v8f{};
    for (int i = 0; i < n8; ++i) {
      a[i] = exp8(a[i] - m);
      sv += a[i];
    }
    const float s = hsum8(sv);
    for (int i = 0; i < n8; ++i) a[i] = a[i] / s;
    if (splat && TWO_TERMS && !P.atomic_splat) {
      splat_corners<3, LP8>(tv[0], p, a, n8, lp);
      splat_corners<6, LP8>(tv[1], p, a, n8, lp);
    } else if (splat) {
      for (int t = 0; t < T; ++t) {
        if (P.atomic_splat) {  // the GPU's way (common/meanfield.h), for the tests
          alignas(32) float q[LP8 > 0 ? LP8 * 8 : 256];
          for (int i = 0; i < n8; ++i) store8(q + 8 * i, a[i]);
          meanfield::splat_pixel_atomic(tv[t].splat, tv[t].off + p * tv[t].d1, tv[t].spw + p * tv[t].d1, tv[t].d1, q, lp);
          continue;
        }
        switch (tv[t].d1) {
          case 3: splat_corners<3, LP8>(tv[t], p, a, n8, lp); break;
          case 6: splat_corners<6, LP8>(tv[t], p, a, n8, lp); break;
          default: splat_corners<0, LP8>(tv[t], p, a, n8, lp);
        }
      }
    }
    if (out) {
      alignas(32) float q[LP8 > 0 ? LP8 * 8 : 256];
      for (int i = 0; i < n8; ++i) store8(q + 8 * i, a[i]);
      if (P.out) {
        float* dst = P.out + b * P.os[0] + y * P.os[2] + x * P.os[3];
        for (int64_t c = 0; c < C; ++c) dst[c * P.os[1]] = q[c];
      }
      if (P.labels) {
        int best = 0;
        for (int c = 1; c < C; ++c)
          if (q[c] > q[best]) best = c;
        P.labels[b * P.ls[0] + y * P.ls[1] + x * P.ls[2]] = static_cast<uint8_t>(best);
      }
    }
  }
  bad_out |= bad;
}

// Merge the chunk buffers, blur along each of the d+1 axes (ping-pong in the chunk buffers, the
// last axis into `blurred`), and clear the chunk buffers for the next splat.
template <int LP8>
void blur_term(const Lattice& L, TermBuffers& B, int chunks, int lp_runtime) {
  const int n8 = LP8 > 0 ? LP8 : lp_runtime / 8;
  const int lp = n8 * 8;
  const int64_t M = L.M;
  float* V0 = B.splat[0].data();
  float* V1 = B.splat[1].data();
  for (int c = 1; c < chunks; ++c) {
    const float* Vc = B.splat[c].data();
    for (int64_t i = 0; i < M * lp; i += 8) store8(V0 + i, load8(V0 + i) + load8(Vc + i));
  }
  const float* src = V0;
  for (int j = 0; j < L.d1; ++j) {
    float* dst = j == L.d1 - 1 ? B.blurred.data() : (src == V0 ? V1 : V0);
    const int* nb = L.nbr.data() + static_cast<int64_t>(j) * M * 2;
    for (int64_t v = 0; v < M; ++v) {
      const float* a = src + v * lp;
      const float* n1 = src + static_cast<int64_t>(nb[2 * v]) * lp;
      const float* n2 = src + static_cast<int64_t>(nb[2 * v + 1]) * lp;
      float* o = dst + v * lp;
      for (int i = 0; i < n8; ++i)
        store8(o + 8 * i, load8(a + 8 * i) + 0.5f * (load8(n1 + 8 * i) + load8(n2 + 8 * i)));
    }
    src = dst;
  }
  for (int c = 0; c < chunks; ++c) std::fill(B.splat[c].data(), B.splat[c].data() + M * lp, 0.f);
}

// Mean field for one image with `lp` padded labels (LP8 = lp / 8 as a compile-time constant, or 0).
// One pixel pass per iteration (slice, softmax, splat fused) and one blur per term; with several
// threads the pixel chunks and the terms' blurs are the parallel tasks (two barriers an iteration).
template <int LP8>
void mean_field(const Problem& P, int64_t b, const std::vector<const Lattice*>& lats, int lp, int nt) {
  const int64_t N = P.H * P.W;
  const int chunks = pixel_chunks(N);
  const int T = static_cast<int>(lats.size());
  StageTimer timer;
  Array<float> unary;
  unary.resize(N * lp);
  std::vector<TermBuffers> bufs(T);
  for (int t = 0; t < T; ++t) {
    const int64_t rows = (lats[t]->M + 1) * static_cast<int64_t>(lp);
    bufs[t].splat.resize(std::max(chunks, 2));
    for (auto& s : bufs[t].splat) {
      s.resize(rows);
      std::fill(s.data(), s.data() + rows, 0.f);
    }
    bufs[t].blurred.resize(rows);
    std::fill(bufs[t].blurred.data(), bufs[t].blurred.data() + rows, 0.f);
  }
  timer("mean field buffers");
  const int team = nt > 1 ? std::min(nt, std::max(chunks, T)) : 1;
  const bool two_terms = T == 2 && lats[0]->d1 == 3 && lats[1]->d1 == 6;
  int bad = 0;
  double t_pass = 0, t_blur = 0;
#pragma omp parallel num_threads(team) reduction(| : bad)
  {
    const bool master = omp_get_thread_num() == 0;
    // Pass 0: -U, Q0 = softmax(-U) and its splat (or the answer when there is nothing to iterate).
    const bool only = T == 0 || P.n_iter == 0;
#pragma omp for schedule(static)
    for (int c = 0; c < chunks; ++c) {
      int64_t p0, p1;
      chunk(N, c, chunks, p0, p1);
      if (two_terms) pixel_pass<LP8, true>(P, b, p0, p1, lats, bufs, c, unary.data(), lp, true, !only, only, bad);
      else pixel_pass<LP8, false>(P, b, p0, p1, lats, bufs, c, unary.data(), lp, true, !only, only, bad);
    }
    // (the implied barrier; `bad` is only known after the region, so a bad input costs the iterations)
    for (int it = 0; it < (only ? 0 : P.n_iter); ++it) {
      double t0 = master && timer.on ? cpu_ms() : 0;
#pragma omp for schedule(dynamic, 1)
      for (int t = 0; t < T; ++t) blur_term<LP8>(*lats[t], bufs[t], chunks, lp);
      double t1 = master && timer.on ? cpu_ms() : 0;
      const bool last = it == P.n_iter - 1;
#pragma omp for schedule(static)
      for (int c = 0; c < chunks; ++c) {
        int64_t p0, p1;
        chunk(N, c, chunks, p0, p1);
        if (two_terms) pixel_pass<LP8, true>(P, b, p0, p1, lats, bufs, c, unary.data(), lp, false, !last, last, bad);
        else pixel_pass<LP8, false>(P, b, p0, p1, lats, bufs, c, unary.data(), lp, false, !last, last, bad);
      }
      if (master && timer.on) {
        t_blur += t1 - t0;
        t_pass += cpu_ms() - t1;
      }
    }
  }
  if (bad)
    throw std::invalid_argument(P.logits ? "probs: logits contain NaN or infinite values"
                                         : "probs: probabilities must be >= 0 and not NaN");
  if (timer.on) std::fprintf(stderr, "  crf blur %.2f pixel passes %.2f ms\n", t_blur, t_pass);
}

int padded_labels(int64_t C) { return static_cast<int>((C + 7) / 8 * 8); }

// A term whose features are the same for every image of the batch (positions only, or channels
// broadcast over the batch) has the same lattice for every image: built once per call.
bool same_for_batch(const Term& t) { return t.K == 0 || t.cs[0] == 0; }

// Builds the lattices of the terms flagged in `todo` for image b (one term per thread when nt > 1).
void build_lattices(const Problem& P, int64_t b, const std::vector<bool>& todo, std::vector<Lattice>& lats, int nt) {
  std::vector<int> list;
  for (size_t t = 0; t < todo.size(); ++t)
    if (todo[t]) list.push_back(static_cast<int>(t));
  const int n = static_cast<int>(list.size());
  if (nt > 1 && n > 1) {
    // The terms' lattices are independent: one per thread, no barrier inside.
    std::exception_ptr error;
#pragma omp parallel for num_threads(std::min(nt, n)) schedule(dynamic, 1)
    for (int i = 0; i < n; ++i) {
      try {
        build_lattice(lats[list[i]], P.terms[list[i]], b, P.H, P.W, P.rounding);
      } catch (...) {
#pragma omp critical(fastseg_crf_build_error)
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  } else {
    for (int i = 0; i < n; ++i) build_lattice(lats[list[i]], P.terms[list[i]], b, P.H, P.W, P.rounding);
  }
}

// `shared`: the lattices built once for the batch (terms with same_for_batch), or null.
void run_image(const Problem& P, int64_t b, int nt, const std::vector<Lattice>* shared) {
  const int T = static_cast<int>(P.terms.size());
  std::vector<Lattice> own(T);
  std::vector<bool> todo(T);
  for (int t = 0; t < T; ++t) todo[t] = !(shared && same_for_batch(P.terms[t]));
  StageTimer timer;
  build_lattices(P, b, todo, own, nt);
  std::vector<const Lattice*> lats(T);
  for (int t = 0; t < T; ++t) lats[t] = todo[t] ? &own[t] : &(*shared)[t];
  timer("lattices");
  const int lp = padded_labels(P.C);
  switch (lp / 8) {
    case 1: mean_field<1>(P, b, lats, lp, nt); break;
    case 2: mean_field<2>(P, b, lats, lp, nt); break;
    case 3: mean_field<3>(P, b, lats, lp, nt); break;
    case 4: mean_field<4>(P, b, lats, lp, nt); break;
    default: mean_field<0>(P, b, lats, lp, nt);
  }
  timer("mean field total");
}

}  // namespace

int64_t densecrf_cpu_bytes(int64_t H, int64_t W, int64_t C, const int* term_dims, int n_terms) {
  // Mirrors the allocations above, with every simplex corner a distinct vertex (M = N (d+1)). The
  // terms' lattices may build concurrently, so their build-time peaks add up.
  const int64_t N = H * W, lp = padded_labels(C);
  const int64_t splat_buffers = std::max(pixel_chunks(N), 2) + 1;  // chunk targets and the blurred copy
  int64_t kept_total = 0, transient_total = 0, vertex_total = 0;
  for (int t = 0; t < n_terms; ++t) {
    const int64_t d = term_dims[t], d1 = d + 1, corners = N * d1, M = corners;
    const int64_t kept = corners * 3 * 4 + d1 * M * 2 * 4;  // off, sw, spw; nbr
    const int64_t cap = static_cast<int64_t>(pow2_at_least(2 * static_cast<uint64_t>(corners)));
    // Largest moment of the build: the grown table and the one before it (a quarter of its size)
    // during a rehash, the simplex cache, the feature tables and the normalisation buffers.
    const int64_t table = cap * 4 + (cap / 2) * std::max<int64_t>(d, 1) * 4;
    transient_total += table + table / 4 + (4096 * 3 * (kMaxDim + 2) * 4) + 2 * (M + 1) * 4 + (H + W + 4096) * 4;
    kept_total += kept;
    vertex_total += splat_buffers * (M + 1) * lp * 4;
  }
  const int64_t mean_field = N * lp * 4 + vertex_total;  // -U; per term the vertex buffers
  return std::max(kept_total + transient_total, kept_total + mean_field);
}

void densecrf_cpu(const Problem& P, int num_threads) {
  const int nt = std::max(1, num_threads);
  for (const Term& t : P.terms) {
    const int64_t corners = P.H * P.W * (t.dim() + 1);
    if (2 * corners >= (int64_t{1} << 31))
      throw std::invalid_argument("densecrf: image too large for the lattice (H*W*(feature dims+1) must be < 2^30)");
  }
  // Lattices that every image of the batch shares (e.g. the Gaussian position kernel) are built
  // once, before the images.
  std::vector<Lattice> shared;
  const std::vector<Lattice>* shared_ptr = nullptr;
  if (P.B >= 2) {
    std::vector<bool> todo(P.terms.size());
    bool any = false;
    for (size_t t = 0; t < P.terms.size(); ++t) any |= (todo[t] = same_for_batch(P.terms[t]));
    if (any) {
      shared.resize(P.terms.size());
      build_lattices(P, 0, todo, shared, nt);
      shared_ptr = &shared;
    }
  }
  if (P.B >= 2 && nt >= 2) {
    // Whole images per thread: no synchronisation inside an image, and each image's memory stays
    // local to one core.
    std::exception_ptr error;
#pragma omp parallel for num_threads(static_cast<int>(std::min<int64_t>(nt, P.B))) schedule(dynamic, 1)
    for (int64_t b = 0; b < P.B; ++b) {
      try {
        run_image(P, b, 1, shared_ptr);
      } catch (...) {
#pragma omp critical(fastseg_crf_error)
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  } else {
    // Inside one image the threads meet at ~100 barriers; on a machine with more runnable threads
    // than cores a descheduled thread stalls every one of them. OpenMP's dynamic adjustment (libgomp:
    // cores minus load average) shrinks the team then, for this call only.
    const int dynamic = omp_get_dynamic();
    omp_set_dynamic(1);
    try {
      for (int64_t b = 0; b < P.B; ++b) run_image(P, b, nt, shared_ptr);
    } catch (...) {
      omp_set_dynamic(dynamic);
      throw;
    }
    omp_set_dynamic(dynamic);
  }
}

}  // namespace crf
}  // namespace fastseg
