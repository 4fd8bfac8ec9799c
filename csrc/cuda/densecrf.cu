// Fully connected CRF on a CUDA device: launch code only. The lattice math, the hash table
// (atomicCAS on slot states) and the per-pixel / per-vertex mean-field steps are the FS_HOST_DEVICE
// functions of common/permutohedral.h and common/meanfield.h, which the CPU build compiles and the
// tests run. Differences from the CPU path: vertex ids are handed out by an atomic counter and the
// splat scatters with atomicAdd (sums in no fixed order, so results match to float rounding, not bit
// for bit).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/meanfield.h"
#include "common/permutohedral.h"
#include "cuda/densecrf.h"

namespace fastseg {
namespace crf {
namespace {

using lattice::HashTable;
using lattice::kEmpty;
using lattice::kMaxDim;

constexpr int kThreads = 256;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("densecrf (CUDA) ") + what + ": " + cudaGetErrorString(e));
}

inline unsigned blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// Device memory freed on the stream when it goes out of scope.
template <typename T>
struct DeviceArray {
  T* p = nullptr;
  cudaStream_t s = nullptr;
  DeviceArray(int64_t n, cudaStream_t stream) : s(stream) {
    check(cudaMallocAsync(reinterpret_cast<void**>(&p), sizeof(T) * std::max<int64_t>(n, 1), stream), "alloc");
  }
  ~DeviceArray() { if (p) cudaFreeAsync(p, s); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
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
__global__ void locate_insert(Term term, int64_t b, int64_t H, int64_t W, const float* scale_in, int rounding,
                              HashTable table, int* off, float* bary_out, int* flags /* [bad, overflow] */) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= H * W) return;
  const int d = term.dim(), d1 = d + 1;
  float f[kMaxDim], scale[kMaxDim], bary[kMaxDim + 1];
  int rem0[kMaxDim + 1], rank[kMaxDim + 1], key[kMaxDim];
  for (int i = 0; i < d; ++i) scale[i] = scale_in[i];
  term.features(b, p / W, p % W, f);
  if (!lattice::locate(f, scale, d, rounding, rem0, rank, bary)) {
    flags[0] = 1;
    return;
  }
  for (int r = 0; r < d1; ++r) {
    lattice::vertex_key(rem0, rank, d, r, key);
    const int slot = lattice::hash_insert(table, key);
    if (slot < 0) {
      flags[1] = 1;
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

struct DeviceLattice {
  int d1 = 0, M = 0;
  int* off = nullptr;   // N * d1
  float* sw = nullptr;  // N * d1 slice weights
  float* spw = nullptr; // N * d1 splat weights
  int* nbr = nullptr;   // d1 * M * 2
  std::vector<void*> owned;
};

void build(DeviceLattice& L, const Term& term, int64_t b, int64_t H, int64_t W, int rounding, cudaStream_t st) {
  const int d = term.dim(), d1 = d + 1;
  const int64_t N = H * W;
  L.d1 = d1;
  float scale_host[kMaxDim];
  lattice::scale_factors(d, scale_host);
  auto alloc = [&](size_t bytes) {
    void* p = nullptr;
    check(cudaMallocAsync(&p, std::max<size_t>(bytes, 4), st), "alloc");
    L.owned.push_back(p);
    return p;
  };
  L.off = static_cast<int*>(alloc(sizeof(int) * N * d1));
  L.sw = static_cast<float*>(alloc(sizeof(float) * N * d1));
  L.spw = static_cast<float*>(alloc(sizeof(float) * N * d1));
  DeviceArray<float> scale(kMaxDim, st);
  DeviceArray<int> counters(4, st);  // bad, overflow, filled, vertex count
  check(cudaMemcpyAsync(scale.p, scale_host, sizeof scale_host, cudaMemcpyHostToDevice, st), "copy");

  // The table starts small and, when it runs out of ids, the whole image is inserted again into
  // one four times larger (the CPU build grows it block by block instead).
  const uint64_t cap_max = pow2_at_least(2 * static_cast<uint64_t>(N) * d1);
  uint64_t cap = std::min(cap_max, pow2_at_least(std::max<uint64_t>(4096, static_cast<uint64_t>(N) / 4)));
  for (;;) {
    const int limit = static_cast<int>(std::min<uint64_t>(cap / 2, static_cast<uint64_t>(N) * d1));
    DeviceArray<int> slots(static_cast<int64_t>(cap), st), keys(static_cast<int64_t>(limit) * std::max(d, 1), st);
    fill_int<<<blocks(cap), kThreads, 0, st>>>(slots.p, cap, 1, kEmpty);
    check(cudaMemsetAsync(counters.p, 0, 4 * sizeof(int), st), "memset");
    HashTable table{slots.p, keys.p, counters.p + 2, static_cast<uint32_t>(cap - 1), d, limit};
    locate_insert<<<blocks(N), kThreads, 0, st>>>(term, b, H, W, scale.p, rounding, table, L.off, L.sw, counters.p);
    int flags[3];
    check(cudaMemcpyAsync(flags, counters.p, sizeof flags, cudaMemcpyDeviceToHost, st), "copy");
    check(cudaStreamSynchronize(st), "locate");
    if (flags[0])
      throw std::invalid_argument("densecrf: a feature is NaN, infinite or too large for the lattice");
    if (flags[1]) {
      cap = std::min(cap * 4, cap_max);
      continue;
    }
    L.M = flags[2];
    L.nbr = static_cast<int*>(alloc(sizeof(int) * static_cast<size_t>(d1) * L.M * 2));
    neighbours<<<blocks(L.M), kThreads, 0, st>>>(table, L.M, L.nbr);
    break;
  }
  // Normalisation through the lattice, folded into the weights.
  DeviceArray<float> a(L.M + 1, st), c(L.M + 1, st);
  fill_float<<<blocks(L.M + 1), kThreads, 0, st>>>(a.p, L.M + 1, 0.f);
  fill_float<<<blocks(L.M + 1), kThreads, 0, st>>>(c.p, L.M + 1, 0.f);
  splat<<<blocks(N), kThreads, 0, st>>>(a.p, L.off, L.sw, d1, nullptr, 1, N, true);
  float* x = a.p;
  float* y = c.p;
  for (int j = 0; j < d1; ++j) {
    blur<<<blocks(L.M), kThreads, 0, st>>>(x, y, L.nbr + static_cast<int64_t>(j) * L.M * 2, L.M, 1);
    std::swap(x, y);
  }
  normalise<<<blocks(N), kThreads, 0, st>>>(x, L.off, L.sw, L.spw, d1, N, lattice::slice_alpha(d), term.compat);
  check(cudaGetLastError(), "lattice kernels");
}

}  // namespace

void densecrf_cuda(const Problem& P, std::uintptr_t stream_handle) {
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream_handle);
  const int64_t N = P.H * P.W, C = P.C;
  const int lp = static_cast<int>((C + 3) / 4 * 4);
  for (int64_t b = 0; b < P.B; ++b) {
    std::vector<DeviceLattice> lats(P.terms.size());
    int max_m = 0;
    for (size_t t = 0; t < P.terms.size(); ++t) {
      build(lats[t], P.terms[t], b, P.H, P.W, P.rounding, st);
      max_m = std::max(max_m, lats[t].M);
    }
    DeviceArray<float> U(N * lp, st), Q(N * lp, st), A(N * lp, st);
    DeviceArray<float> V1((static_cast<int64_t>(max_m) + 1) * lp, st), V2((static_cast<int64_t>(max_m) + 1) * lp, st);
    DeviceArray<int> bad(1, st);
    check(cudaMemsetAsync(bad.p, 0, sizeof(int), st), "memset");
    unary_init<<<blocks(N), kThreads, 0, st>>>(P.probs, P.ps[0], P.ps[1], P.ps[2], P.ps[3], b, C, P.H, P.W,
                                                P.logits, lp, U.p, Q.p, bad.p);
    int bad_host = 0;
    check(cudaMemcpyAsync(&bad_host, bad.p, sizeof bad_host, cudaMemcpyDeviceToHost, st), "copy");
    check(cudaStreamSynchronize(st), "unary");
    if (bad_host)
      throw std::invalid_argument(P.logits ? "probs: logits contain NaN or infinite values"
                                           : "probs: probabilities must be >= 0 and not NaN");
    for (int it = 0; it < P.n_iter; ++it) {
      for (size_t t = 0; t < lats.size(); ++t) {
        const DeviceLattice& L = lats[t];
        const int64_t rows = (static_cast<int64_t>(L.M) + 1) * lp;
        fill_float<<<blocks(rows), kThreads, 0, st>>>(V1.p, rows, 0.f);
        fill_float<<<blocks(rows), kThreads, 0, st>>>(V2.p, rows, 0.f);
        splat<<<blocks(N), kThreads, 0, st>>>(V1.p, L.off, L.spw, L.d1, Q.p, lp, N, false);
        float* x = V1.p;
        float* y = V2.p;
        for (int j = 0; j < L.d1; ++j) {
          blur<<<blocks(L.M), kThreads, 0, st>>>(x, y, L.nbr + static_cast<int64_t>(j) * L.M * 2, L.M, lp);
          std::swap(x, y);
        }
        slice<<<blocks(N), kThreads, 0, st>>>(x, L.off, L.sw, L.d1, U.p, A.p, lp, N, t == 0);
      }
      softmax<<<blocks(N), kThreads, 0, st>>>(lats.empty() ? U.p : A.p, Q.p, lp, N);
    }
    write_out<<<blocks(N), kThreads, 0, st>>>(Q.p, lp, b, C, P.H, P.W, P.out, P.os[0], P.os[1], P.os[2], P.os[3],
                                               P.labels, P.ls[0], P.ls[1], P.ls[2]);
    check(cudaGetLastError(), "mean-field kernels");
    check(cudaStreamSynchronize(st), "mean field");  // before the lattices' memory is released
    for (auto& L : lats)
      for (void* p : L.owned) cudaFreeAsync(p, st);
  }
}

}  // namespace crf
}  // namespace fastseg
