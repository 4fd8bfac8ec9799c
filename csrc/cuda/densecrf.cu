// Fully connected CRF on a CUDA device: launch code only. The lattice math, the hash table
// (acquire / release atomics on slot states) and the per-pixel / per-vertex mean-field steps are the
// FS_HOST_DEVICE functions of common/permutohedral.h and common/meanfield.h, which the CPU build
// compiles and the tests run. Differences from the CPU path: vertex ids are handed out by an atomic
// counter and the splat scatters with atomicAdd (sums in no fixed order, so results match to float
// rounding, not bit for bit).
//
// Memory comes from the caller's allocator (cuda/workspace.h: torch's caching allocator) and goes
// back to it, in stream order, when each buffer leaves scope. The host waits for the device once
// per image: the lattice's vertex count sizes the blur buffers and the launches after it, and the
// same read-back says whether probabilities or features were invalid (an error the caller gets as
// an exception) and whether a hash table ran out of room (it is then rebuilt larger, one more wait).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "common/meanfield.h"
#include "common/permutohedral.h"
#include "cuda/densecrf.h"
#include "cuda/launch.h"
#include "cuda/workspace.h"

namespace fastseg {
namespace crf {
namespace {

using lattice::HashTable;
using lattice::kEmpty;
using lattice::kMaxDim;

using cuda::check;
using cuda::kThreads;

inline unsigned blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// The lattice scale factors, passed by value: no host-to-device copy to order or to wait for.
struct Scale {
  float v[kMaxDim];
};

__global__ void fill_int(int* p, int64_t n, int64_t stride, int v) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) p[i * stride] = v;
}

__global__ void fill_float(float* p, int64_t n, float v) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) p[i] = v;
}

// 1. Every pixel locates its simplex and inserts the d+1 vertices.
__global__ void locate_insert(Term term, int64_t b, int64_t H, int64_t W, Scale scale_in, int rounding,
                              HashTable table, int* off, float* bary_out, int* bad, int* overflow) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= H * W) return;
  const int d = term.dim(), d1 = d + 1;
  float f[kMaxDim], scale[kMaxDim], bary[kMaxDim + 1];
  int rem0[kMaxDim + 1], rank[kMaxDim + 1], key[kMaxDim];
  for (int i = 0; i < d; ++i) scale[i] = scale_in.v[i];
  term.features(b, p / W, p % W, f);
  if (!lattice::locate(f, scale, d, rounding, rem0, rank, bary)) {
    *bad = 1;
    return;
  }
  for (int r = 0; r < d1; ++r) {
    lattice::vertex_key(rem0, rank, d, r, key);
    const int slot = lattice::hash_insert(table, key);
    if (slot < 0) {
      *overflow = 1;
      return;
    }
    off[p * d1 + r] = slot;
    bary_out[p * d1 + r] = bary[r];
  }
}

// 2. Blur neighbours of every vertex along every axis.
__global__ void neighbours(HashTable table, int M, int* nbr) {
  const int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (v >= M) return;
  const int d = table.d;
  const int* key = table.keys + v * d;
  int nk[kMaxDim];
  for (int j = 0; j <= d; ++j)
    for (int side = 0; side < 2; ++side) {
      lattice::neighbour_key(key, d, j, side == 0 ? -1 : 1, nk);
      const int id = lattice::hash_find(table, nk);
      nbr[(static_cast<int64_t>(j) * M + v) * 2 + side] = id < 0 ? M : id;
    }
}

__global__ void splat(float* values, const int* off, const float* w, int d1, const float* q, int lp, int64_t N,
                      bool ones) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= N) return;
  const float one = 1.f;
  meanfield::splat_pixel_atomic(values, off + p * d1, w + p * d1, d1, ones ? &one : q + p * lp, ones ? 1 : lp);
}

__global__ void blur(const float* in, float* out, const int* nb, int M, int lp) {
  const int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (v < M) meanfield::blur_vertex(in, out, v, nb[2 * v], nb[2 * v + 1], lp);
}

// Normalisation: norm = 1/sqrt(slice(blur(splat(1))) + 1e-20); then fold it into the weights.
__global__ void normalise(const float* values, const int* off, float* bary, float* spw, int d1, int64_t N,
                          float alpha, float compat) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= N) return;
  float s = 0.f;
  for (int r = 0; r < d1; ++r) s += bary[p * d1 + r] * values[off[p * d1 + r]] * alpha;
  const float norm = static_cast<float>(1.0 / sqrt(static_cast<double>(s) + 1e-20));
  for (int r = 0; r < d1; ++r) {
    const float bw = bary[p * d1 + r];
    spw[p * d1 + r] = bw * norm;
    bary[p * d1 + r] = bw * alpha * norm * compat;  // becomes the slice weight
  }
}

__global__ void unary_init(const float* probs, int64_t ps0, int64_t ps1, int64_t ps2, int64_t ps3, int64_t b,
                           int64_t C, int64_t H, int64_t W, bool logits, int lp, float* U, float* Q, int* bad) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= H * W) return;
  const int64_t y = p / W, x = p % W;
  float* u = U + p * lp;
  for (int64_t c = 0; c < C; ++c) {
    const float v = probs[b * ps0 + c * ps1 + y * ps2 + x * ps3];
    if (logits ? !isfinite(v) : !(v >= 0.f)) *bad = 1;
    u[c] = meanfield::neg_unary(v, logits);
  }
  for (int k = static_cast<int>(C); k < lp; ++k) u[k] = meanfield::kPadLogit;
  meanfield::softmax_row(u, Q + p * lp, lp);
}

__global__ void slice(const float* values, const int* off, const float* sw, int d1, const float* U, float* A,
                      int lp, int64_t N, bool first) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= N) return;
  float* a = A + p * lp;
  if (first)
    for (int k = 0; k < lp; ++k) a[k] = U[p * lp + k];
  meanfield::slice_pixel(values, off + p * d1, sw + p * d1, d1, a, lp);
}

__global__ void softmax(const float* A, float* Q, int lp, int64_t N) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p < N) meanfield::softmax_row(A + p * lp, Q + p * lp, lp);
}

__global__ void write_out(const float* Q, int lp, int64_t b, int64_t C, int64_t H, int64_t W, float* out,
                          int64_t os0, int64_t os1, int64_t os2, int64_t os3, uint8_t* labels, int64_t ls0,
                          int64_t ls1, int64_t ls2) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= H * W) return;
  const int64_t y = p / W, x = p % W;
  const float* q = Q + p * lp;
  if (out)
    for (int64_t c = 0; c < C; ++c) out[b * os0 + c * os1 + y * os2 + x * os3] = q[c];
  if (labels) {
    int best = 0;
    for (int c = 1; c < C; ++c)
      if (q[c] > q[best]) best = c;
    labels[b * ls0 + y * ls1 + x * ls2] = static_cast<uint8_t>(best);
  }
}

uint64_t pow2_at_least(uint64_t v) {
  uint64_t p = 64;
  while (p < v) p <<= 1;
  return p;
}

// Counters the device fills and the host reads back once per image.
constexpr int kBadProbs = 0, kBadFeatures = 1, kTermCounters = 2;  // then per term: overflow, vertex count
inline int overflow_at(size_t t) { return kTermCounters + 2 * static_cast<int>(t); }
inline int count_at(size_t t) { return overflow_at(t) + 1; }

// One term's lattice for one image. The hash table lives only until the blur neighbours are known.
struct DeviceLattice {
  int d = 0, d1 = 0, M = 0;
  uint64_t cap = 0;            // hash table slots (a power of two)
  DeviceBuffer<int> off;       // N * d1: vertex id of each simplex corner
  DeviceBuffer<float> sw;      // N * d1: slice weights (barycentric weights until normalised)
  DeviceBuffer<float> spw;     // N * d1: splat weights
  DeviceBuffer<int> nbr;       // d1 * M * 2: blur neighbours (M = none)
  DeviceBuffer<int> slots, keys;
};

// Queues the location of every pixel and the insertion of its vertices into a table of L.cap slots;
// the vertex count and the overflow flag land in counters (read by the host before finish_lattice).
void start_lattice(DeviceLattice& L, const Term& term, int64_t b, int64_t H, int64_t W, int rounding,
                   int* counters, size_t t, const DeviceAllocator& mem, cudaStream_t st) {
  const int64_t N = H * W;
  L.d = term.dim();
  L.d1 = L.d + 1;
  if (!L.off.get()) {
    L.off = DeviceBuffer<int>(mem, N * L.d1);
    L.sw = DeviceBuffer<float>(mem, N * L.d1);
  }
  const int limit = static_cast<int>(std::min<uint64_t>(L.cap / 2, static_cast<uint64_t>(N) * L.d1));
  L.slots = DeviceBuffer<int>(mem, static_cast<int64_t>(L.cap));
  L.keys = DeviceBuffer<int>(mem, static_cast<int64_t>(limit) * std::max(L.d, 1));
  Scale scale{};
  lattice::scale_factors(L.d, scale.v);
  fill_int<<<blocks(static_cast<int64_t>(L.cap)), kThreads, 0, st>>>(L.slots.get(), L.cap, 1, kEmpty);
  check(cudaMemsetAsync(counters + overflow_at(t), 0, 2 * sizeof(int), st), "densecrf (CUDA) memset");
  HashTable table{L.slots.get(), L.keys.get(), counters + count_at(t), static_cast<uint32_t>(L.cap - 1), L.d, limit};
  locate_insert<<<blocks(N), kThreads, 0, st>>>(term, b, H, W, scale, rounding, table, L.off.get(), L.sw.get(),
                                                 counters + kBadFeatures, counters + overflow_at(t));
  check(cudaGetLastError(), "densecrf (CUDA) lattice location");
}

// With the vertex count known: the blur neighbours, then the normalisation through the lattice,
// folded into the weights (norm = 1/sqrt(slice(blur(splat(1))) + 1e-20)).
void finish_lattice(DeviceLattice& L, int M, const Term& term, int64_t N, const DeviceAllocator& mem,
                    cudaStream_t st) {
  L.M = M;
  const int limit = static_cast<int>(std::min<uint64_t>(L.cap / 2, static_cast<uint64_t>(N) * L.d1));
  HashTable table{L.slots.get(), L.keys.get(), nullptr, static_cast<uint32_t>(L.cap - 1), L.d, limit};
  L.nbr = DeviceBuffer<int>(mem, static_cast<int64_t>(L.d1) * M * 2);
  neighbours<<<blocks(M), kThreads, 0, st>>>(table, M, L.nbr.get());
  L.slots.reset();  // stream order: the neighbour search queued above runs before any reuse
  L.keys.reset();
  L.spw = DeviceBuffer<float>(mem, N * L.d1);
  DeviceBuffer<float> a(mem, M + 1), c(mem, M + 1);
  fill_float<<<blocks(M + 1), kThreads, 0, st>>>(a.get(), M + 1, 0.f);
  fill_float<<<blocks(M + 1), kThreads, 0, st>>>(c.get(), M + 1, 0.f);
  splat<<<blocks(N), kThreads, 0, st>>>(a.get(), L.off.get(), L.sw.get(), L.d1, nullptr, 1, N, true);
  float* x = a.get();
  float* y = c.get();
  for (int j = 0; j < L.d1; ++j) {
    blur<<<blocks(M), kThreads, 0, st>>>(x, y, L.nbr.get() + static_cast<int64_t>(j) * M * 2, M, 1);
    std::swap(x, y);
  }
  normalise<<<blocks(N), kThreads, 0, st>>>(x, L.off.get(), L.sw.get(), L.spw.get(), L.d1, N,
                                            lattice::slice_alpha(L.d), term.compat);
  check(cudaGetLastError(), "densecrf (CUDA) lattice kernels");
}

// The unary terms and every term's lattice location queued, one read-back of the counters: the
// one host wait of an image (again for each table that ran out of room, rebuilt four times larger).
// The first table has room for N / 2 vertices or more; CamVid frames under the default terms have
// about 0.06 (bilateral) and 0.13 (Gaussian) vertices per pixel, so only unnatural images (noise)
// pay the second wait.
void build_lattices(const Problem& P, int64_t b, std::vector<DeviceLattice>& lats, int* counters,
                    const DeviceAllocator& mem, cudaStream_t st) {
  const int64_t N = P.H * P.W;
  const size_t T = P.terms.size();
  std::vector<int> host(kTermCounters + 2 * T);
  std::vector<bool> todo(T, true);
  for (size_t t = 0; t < T; ++t) {
    const int d1 = P.terms[t].dim() + 1;
    lats[t].cap = std::min(pow2_at_least(2 * static_cast<uint64_t>(N) * d1),
                           pow2_at_least(std::max<uint64_t>(4096, static_cast<uint64_t>(N))));
  }
  for (;;) {
    for (size_t t = 0; t < T; ++t)
      if (todo[t]) start_lattice(lats[t], P.terms[t], b, P.H, P.W, P.rounding, counters, t, mem, st);
    check(cudaMemcpyAsync(host.data(), counters, host.size() * sizeof(int), cudaMemcpyDeviceToHost, st),
          "densecrf (CUDA) copy");
    check(cudaStreamSynchronize(st), "densecrf (CUDA) lattice location");
    if (host[kBadProbs])
      throw std::invalid_argument(P.logits ? "probs: logits contain NaN or infinite values"
                                           : "probs: probabilities must be >= 0 and not NaN");
    if (host[kBadFeatures])
      throw std::invalid_argument("densecrf: a feature is NaN, infinite or too large for the lattice");
    bool again = false;
    for (size_t t = 0; t < T; ++t) {
      todo[t] = host[overflow_at(t)] != 0;
      if (todo[t]) {
        const int d1 = P.terms[t].dim() + 1;
        lats[t].cap = std::min(lats[t].cap * 4, pow2_at_least(2 * static_cast<uint64_t>(N) * d1));
        again = true;
      }
    }
    if (!again) break;
  }
  for (size_t t = 0; t < T; ++t) finish_lattice(lats[t], host[count_at(t)], P.terms[t], N, mem, st);
}

}  // namespace

void densecrf_cuda(const Problem& P, std::uintptr_t stream_handle, const DeviceAllocator& mem) {
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream_handle);
  const int64_t N = P.H * P.W, C = P.C;
  const int lp = static_cast<int>((C + 3) / 4 * 4);
  const size_t T = P.terms.size();
  for (int64_t b = 0; b < P.B; ++b) {
    DeviceBuffer<int> counters(mem, kTermCounters + 2 * static_cast<int64_t>(T));
    DeviceBuffer<float> U(mem, N * lp), Q(mem, N * lp), A(mem, N * lp);
    check(cudaMemsetAsync(counters.get(), 0, (kTermCounters + 2 * T) * sizeof(int), st),
          "densecrf (CUDA) memset");
    unary_init<<<blocks(N), kThreads, 0, st>>>(P.probs, P.ps[0], P.ps[1], P.ps[2], P.ps[3], b, C, P.H, P.W,
                                                P.logits, lp, U.get(), Q.get(), counters.get() + kBadProbs);
    check(cudaGetLastError(), "densecrf (CUDA) unary");
    std::vector<DeviceLattice> lats(T);
    build_lattices(P, b, lats, counters.get(), mem, st);
    int max_m = 0;
    for (const auto& L : lats) max_m = std::max(max_m, L.M);
    const int64_t vertex_rows = (static_cast<int64_t>(max_m) + 1) * lp;  // row M: "no neighbour", zeros
    DeviceBuffer<float> V1(mem, vertex_rows), V2(mem, vertex_rows);
    for (int it = 0; it < P.n_iter; ++it) {
      for (size_t t = 0; t < T; ++t) {
        const DeviceLattice& L = lats[t];
        const int64_t rows = (static_cast<int64_t>(L.M) + 1) * lp;
        fill_float<<<blocks(rows), kThreads, 0, st>>>(V1.get(), rows, 0.f);
        fill_float<<<blocks(rows), kThreads, 0, st>>>(V2.get(), rows, 0.f);
        splat<<<blocks(N), kThreads, 0, st>>>(V1.get(), L.off.get(), L.spw.get(), L.d1, Q.get(), lp, N, false);
        float* x = V1.get();
        float* y = V2.get();
        for (int j = 0; j < L.d1; ++j) {
          blur<<<blocks(L.M), kThreads, 0, st>>>(x, y, L.nbr.get() + static_cast<int64_t>(j) * L.M * 2, L.M, lp);
          std::swap(x, y);
        }
        slice<<<blocks(N), kThreads, 0, st>>>(x, L.off.get(), L.sw.get(), L.d1, U.get(), A.get(), lp, N, t == 0);
      }
      softmax<<<blocks(N), kThreads, 0, st>>>(T == 0 ? U.get() : A.get(), Q.get(), lp, N);
    }
    write_out<<<blocks(N), kThreads, 0, st>>>(Q.get(), lp, b, C, P.H, P.W, P.out, P.os[0], P.os[1], P.os[2],
                                               P.os[3], P.labels, P.ls[0], P.ls[1], P.ls[2]);
    check(cudaGetLastError(), "densecrf (CUDA) mean-field kernels");
    // No wait here: every buffer goes back to the caller's allocator in stream order.
  }
}

}  // namespace crf
}  // namespace fastseg
