// Fully connected CRF on the CPU: pydensecrf's algorithm (see shared/notes/densecrf.md), built for
// speed and for several cores.
//
//  * Each pairwise term's lattice is built once per image and serves both normalisation passes and
//    every iteration: per simplex corner the dense vertex id and a slice weight with the symmetric
//    normalisation, the alpha constant and the Potts weight folded in; per vertex the list of
//    (pixel, splat weight) in pixel order (so the splat is a race-free gather that sums in the same
//    order as pydensecrf) and the 2 (d+1) blur neighbours.
//  * The hash table is filled by all threads at once with atomic compare-and-swap (the same code
//    as the CUDA build, common/permutohedral.h), then compacted to dense ids.
//  * Label vectors are padded to a multiple of 4 and the hot loops are instantiated for each padded
//    count up to 32, so they vectorise; larger label counts use the same code with a runtime count.
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

// Uninitialised storage (std::vector would zero what is overwritten anyway).
template <typename T>
struct Array {
  std::unique_ptr<T[]> p;
  int64_t n = 0;
  void resize(int64_t size) {
    if (size > n) {
      p.reset(new T[static_cast<size_t>(size)]);
      n = size;
    }
  }
  void release() { p.reset(); n = 0; }
  T* data() const { return p.get(); }
  T& operator[](int64_t i) const { return p[i]; }
};

inline void chunk(int64_t n, int t, int T, int64_t& b, int64_t& e) {
  b = n * t / T;
  e = n * (t + 1) / T;
}

inline uint64_t pow2_at_least(uint64_t v) {
  uint64_t p = 64;
  while (p < v) p <<= 1;
  return p;
}

struct Lattice {
  int d = 0, d1 = 0;
  int64_t N = 0;
  int M = 0;
  Array<int> off;     // N * d1: dense vertex id of each simplex corner
  Array<float> sw;    // N * d1: slice weight = bary * alpha * norm * compat
  Array<float> spw;   // N * d1: splat weight = bary * norm (only for the atomic splat)
  Array<int> ptr;     // M + 1: CSR over vertices
  Array<int> pix;     // N * d1: pixels splatting into each vertex, ascending
  Array<float> w;     // N * d1: their splat weights = bary * norm
  Array<int> nbr;     // d1 * M * 2: blur neighbours per axis (M = none)
};

// Locates pixels [start, end) of image b in the lattice and inserts their simplices' vertices
// (off = vertex ids, bary = barycentric weights). Neighbouring pixels often fall in the same simplex
// (same remainder-0 point and ranks): then the previous pixel's ids are reused without hashing.
// Locates pixels [start, end) of image b in the lattice and inserts their simplices' vertices
// (off = vertex ids, bary = barycentric weights). Many pixels fall in a simplex seen shortly before
// (same remainder-0 point and ranks; natural images have far fewer simplices than pixels), so each
// thread keeps a small direct-mapped cache simplex -> vertex ids in front of the shared hash table.
template <int D>
void insert_pixels(const Term& term, int64_t b, int64_t W, int64_t start, int64_t end, const float* scale,
                   int rounding, const HashTable& table, int* off, float* bary_all, std::atomic<int>& overflow,
                   std::atomic<int>& bad, int nt) {
  const int d = D > 0 ? D : term.dim();
  const int d1 = d + 1;
  constexpr int kD1 = D > 0 ? D + 1 : kMaxDim + 1;
  constexpr int kEntries = 256;
  struct Entry {
    int rem0[kD1], rank[kD1], ids[kD1];
    bool valid;
  };
#pragma omp parallel num_threads(nt)
  {
    std::vector<Entry> cache(kEntries);
    for (auto& e : cache) e.valid = false;
#pragma omp for schedule(dynamic, 1024)
    for (int64_t p = start; p < end; ++p) {
      if (overflow.load(std::memory_order_relaxed)) continue;
      float f[kMaxDim];
      term.features(b, p / W, p % W, f);
      int rem0[kMaxDim + 1], rank[kMaxDim + 1], key[kMaxDim];
      float bary[kMaxDim + 1];
      if (!lattice::locate<D>(f, scale, d, rounding, rem0, rank, bary)) {
        bad.store(1, std::memory_order_relaxed);
        continue;
      }
      for (int r = 0; r < d1; ++r) bary_all[p * d1 + r] = bary[r];
      uint32_t h = 0;
      for (int i = 0; i < d1; ++i) h = (h ^ static_cast<uint32_t>(rem0[i] * (d1 + 1) + rank[i])) * 0x9E3779B1u;
      Entry& e = cache[(h >> 16) & (kEntries - 1)];
      bool same = e.valid;
      for (int i = 0; i < d1 && same; ++i) same = rem0[i] == e.rem0[i] && rank[i] == e.rank[i];
      if (same) {
        for (int r = 0; r < d1; ++r) off[p * d1 + r] = e.ids[r];
        continue;
      }
      e.valid = false;
      bool ok = true;
      for (int r = 0; r < d1; ++r) {
        lattice::vertex_key(rem0, rank, d, r, key);
        const int id = lattice::hash_insert(table, key);
        if (id < 0) {
          overflow.store(1, std::memory_order_relaxed);
          ok = false;
          break;
        }
        off[p * d1 + r] = id;
        e.ids[r] = id;
      }
      if (ok) {
        for (int i = 0; i < d1; ++i) {
          e.rem0[i] = rem0[i];
          e.rank[i] = rank[i];
        }
        e.valid = true;
      }
    }
  }
}

// Builds the lattice of `term` for image b and the symmetric normalisation it implies.
void build_lattice(Lattice& L, const Term& term, int64_t b, int64_t H, int64_t W, int rounding,
                   bool keep_splat_weights, int nt) {
  const int d = term.dim();
  const int d1 = d + 1;
  const int64_t N = H * W;
  L.d = d;
  L.d1 = d1;
  L.N = N;
  float scale[kMaxDim];
  lattice::scale_factors(d, scale);
  L.off.resize(N * d1);
  L.sw.resize(N * d1);  // barycentric weights until the normalisation is known
  int* off = L.off.data();
  float* bary_all = L.sw.data();

  StageTimer timer;
  // 1. Locate every pixel's simplex and insert its d+1 vertices, all threads at once (atomic
  //    compare-and-swap). The table starts small (natural images have few vertices, and a small
  //    table stays in cache); pixels go in blocks, and a block that runs out of ids is inserted
  //    again after the table has grown (ids survive the rehash).
  const int64_t max_ids = N * d1;
  const int stride = d + 1;
  uint64_t cap = pow2_at_least(std::max<uint64_t>(4096, static_cast<uint64_t>(N) / 4));
  auto limit_of = [&](uint64_t c) { return static_cast<int>(std::min<uint64_t>(c / 2, static_cast<uint64_t>(max_ids))); };
  Array<int> slots, keys;
  slots.resize(static_cast<int64_t>(cap) * stride);
  keys.resize(static_cast<int64_t>(limit_of(cap)) * std::max(d, 1));
  int count = 0;
  auto clear = [&](int* p, int64_t slots_n) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t h = 0; h < slots_n; ++h) p[h * stride] = kEmpty;
  };
  clear(slots.data(), static_cast<int64_t>(cap));
  HashTable table{slots.data(), keys.data(), &count, static_cast<uint32_t>(cap - 1), d, limit_of(cap)};
  const int64_t block = std::max<int64_t>(1 << 15, (N + 7) / 8);
  for (int64_t start = 0; start < N;) {
    const int64_t end = std::min(N, start + block);
    std::atomic<int> overflow{0}, bad{0};
    switch (d) {  // the common dimensions get unrolled lattice code
      case 2: insert_pixels<2>(term, b, W, start, end, scale, rounding, table, off, bary_all, overflow, bad, nt); break;
      case 5: insert_pixels<5>(term, b, W, start, end, scale, rounding, table, off, bary_all, overflow, bad, nt); break;
      default: insert_pixels<0>(term, b, W, start, end, scale, rounding, table, off, bary_all, overflow, bad, nt);
    }
    if (bad.load())
      throw std::invalid_argument(
          "densecrf: a feature is NaN, infinite or too large for the lattice (a scale such as srgb or "
          "sxy, or a feature channel, is far out of range)");
    if (!overflow.load()) {
      start = end;
      continue;
    }
    // Out of ids: every id below the limit is a complete vertex. Grow 4x, rehash, redo the block.
    const int have = table.limit;
    cap = std::min(cap * 4, pow2_at_least(2 * static_cast<uint64_t>(max_ids)));
    Array<int> new_slots, new_keys;
    new_slots.resize(static_cast<int64_t>(cap) * stride);
    new_keys.resize(static_cast<int64_t>(limit_of(cap)) * std::max(d, 1));
    clear(new_slots.data(), static_cast<int64_t>(cap));
    std::memcpy(new_keys.data(), keys.data(), sizeof(int) * static_cast<size_t>(have) * d);
    slots = std::move(new_slots);
    keys = std::move(new_keys);
    count = have;
    table = HashTable{slots.data(), keys.data(), &count, static_cast<uint32_t>(cap - 1), d, limit_of(cap)};
#pragma omp parallel for num_threads(nt) schedule(static) if(have > (1 << 16))
    for (int64_t id = 0; id < have; ++id) lattice::hash_insert(table, keys.data() + id * d, static_cast<int>(id));
  }
  const int64_t M = count;
  L.M = static_cast<int>(M);
  timer("locate+insert");

  // 2. Blur neighbours: along axis j, key - 1 with +d on j (n1) and key + 1 with -d on j (n2).
  L.nbr.resize(static_cast<int64_t>(d1) * M * 2);
  {
    int* nbr = L.nbr.data();
#pragma omp parallel for num_threads(nt) schedule(static) if(M * d1 > (1 << 15))
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
  // 3. Per-vertex lists of (pixel, weight) in pixel order: each thread counts its own pixel range,
  //    so the lists come out ascending whatever the thread count.
  L.ptr.resize(M + 1);
  L.pix.resize(N * d1);
  L.w.resize(N * d1);
  {
    std::vector<int> per_thread(static_cast<size_t>(nt) * (M + 1), 0);
    int* ptr = L.ptr.data();
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num(), T = omp_get_num_threads();
      int64_t lo, hi;
      chunk(N, t, T, lo, hi);
      int* cnt = per_thread.data() + static_cast<int64_t>(t) * (M + 1);
      for (int64_t k = lo * d1; k < hi * d1; ++k) ++cnt[off[k]];
#pragma omp barrier
#pragma omp single
      {
        int64_t run = 0;
        for (int64_t v = 0; v < M; ++v) {
          ptr[v] = static_cast<int>(run);
          for (int u = 0; u < T; ++u) {
            int& c = per_thread[static_cast<int64_t>(u) * (M + 1) + v];
            const int n = c;
            c = static_cast<int>(run);  // becomes thread u's cursor into vertex v's list
            run += n;
          }
        }
        ptr[M] = static_cast<int>(run);
      }
      for (int64_t p = lo; p < hi; ++p)
        for (int r = 0; r < d1; ++r) {
          const int pos = cnt[off[p * d1 + r]]++;
          L.pix[pos] = static_cast<int>(p);
          L.w[pos] = bary_all[p * d1 + r];
        }
    }
  }

  timer("csr");
  // 4. Normalisation: n = K * 1 through the lattice, norm = 1 / sqrt(n + 1e-20).
  const float alpha = lattice::slice_alpha(d);
  std::vector<float> norm(N);
  {
    std::vector<float> a(M + 1, 0.f), c(M + 1, 0.f);
#pragma omp parallel for num_threads(nt) schedule(static) if(M > (1 << 16))
    for (int64_t v = 0; v < M; ++v) {
      float s = 0.f;
      for (int e = L.ptr[v]; e < L.ptr[v + 1]; ++e) s += L.w[e];
      a[v] = s;
    }
    for (int j = 0; j < d1; ++j) {
      const int* nb = L.nbr.data() + static_cast<int64_t>(j) * M * 2;
#pragma omp parallel for num_threads(nt) schedule(static) if(M > (1 << 17))
      for (int64_t v = 0; v < M; ++v) c[v] = a[v] + 0.5f * (a[nb[2 * v]] + a[nb[2 * v + 1]]);
      std::swap(a, c);
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t p = 0; p < N; ++p) {
      float s = 0.f;
      for (int r = 0; r < d1; ++r) s += bary_all[p * d1 + r] * a[off[p * d1 + r]] * alpha;
      norm[p] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s) + 1e-20));
    }
  }

  // 5. Fold the normalisation (both sides), alpha and the Potts weight into the weights.
  if (keep_splat_weights) L.spw.resize(N * d1);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t p = 0; p < N; ++p)
    for (int r = 0; r < d1; ++r) {
      const float bw = bary_all[p * d1 + r];
      if (keep_splat_weights) L.spw[p * d1 + r] = bw * norm[p];
      L.sw[p * d1 + r] = bw * alpha * norm[p] * term.compat;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t e = 0; e < N * d1; ++e) L.w[e] *= norm[L.pix[e]];
  timer("normalise");
  if (timer.on) std::fprintf(stderr, "  crf lattice d=%d: %lld vertices for %lld pixels\n", d, (long long)M, (long long)N);
}

struct Workspace {
  Array<float> unary, q, a, v1, v2;
};

// Mean field for one image with `lp` padded labels (LP: the same as a compile-time constant, or 0).
template <int LP>
void mean_field(const Problem& P, int64_t b, std::vector<Lattice>& lats, int lp_runtime, Workspace& ws,
                int nt) {
  const int lp = LP > 0 ? LP : lp_runtime;
  const int64_t H = P.H, W = P.W, N = H * W, C = P.C;
  float* U = ws.unary.data();
  float* Q = ws.q.data();
  float* A = ws.a.data();

  // -U and Q0 = softmax(-U); bad probabilities are reported, not propagated.
  StageTimer timer;
  double t_splat = 0, t_blur = 0, t_slice = 0, t_softmax = 0;
  auto now = [] { return cpu_ms(); };
  auto ms = [](double a, double b) { return b - a; };
  // Row by row and label by label, so the logarithms vectorise over x.
  std::atomic<int> bad{0};
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> row(W);
    int row_bad = 0;
#pragma omp for schedule(static)
    for (int64_t y = 0; y < H; ++y) {
      for (int64_t c = 0; c < C; ++c) {
        const float* src = P.probs + b * P.ps[0] + c * P.ps[1] + y * P.ps[2];
        for (int64_t x = 0; x < W; ++x) row[x] = src[x * P.ps[3]];
        if (P.logits) {
          for (int64_t x = 0; x < W; ++x) row_bad |= !(std::fabs(row[x]) <= 3.4e38f);
        } else {
          for (int64_t x = 0; x < W; ++x) row_bad |= !(row[x] >= 0.f);
          for (int64_t x = 0; x < W; ++x) row[x] = meanfield::neg_unary(row[x], false);
        }
        float* u = U + y * W * lp + c;
        for (int64_t x = 0; x < W; ++x) u[x * lp] = row[x];
      }
      for (int64_t x = 0; x < W; ++x) {
        float* u = U + (y * W + x) * lp;
        for (int k = static_cast<int>(C); k < lp; ++k) u[k] = meanfield::kPadLogit;
        meanfield::softmax_row(u, Q + (y * W + x) * lp, lp);
      }
    }
    if (row_bad) bad.store(1, std::memory_order_relaxed);
  }
  if (bad.load())
    throw std::invalid_argument(P.logits ? "probs: logits contain NaN or infinite values"
                                         : "probs: probabilities must be >= 0 and not NaN");

  for (int it = 0; it < P.n_iter; ++it) {
    for (size_t t = 0; t < lats.size(); ++t) {
      const Lattice& L = lats[t];
      const int64_t M = L.M;
      const int d1 = L.d1;
      float* V = ws.v1.data();
      float* V2 = ws.v2.data();
      auto t0 = now();
      // Splat.
      if (P.atomic_splat) {
        std::fill(V, V + (M + 1) * lp, 0.f);
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t p = 0; p < N; ++p)
          meanfield::splat_pixel_atomic(V, L.off.data() + p * d1, L.spw.data() + p * d1, d1, Q + p * lp, lp);
      } else {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t v = 0; v < M; ++v) {
          float acc[LP > 0 ? LP : 1];
          float* out = LP > 0 ? acc : V + v * lp;
          for (int k = 0; k < lp; ++k) out[k] = 0.f;
          for (int e = L.ptr[v]; e < L.ptr[v + 1]; ++e) {
            const float we = L.w[e];
            const float* q = Q + static_cast<int64_t>(L.pix[e]) * lp;
            for (int k = 0; k < lp; ++k) out[k] += we * q[k];
          }
          if (LP > 0)
            for (int k = 0; k < lp; ++k) V[v * lp + k] = out[k];
        }
      }
      for (int k = 0; k < lp; ++k) V[M * lp + k] = 0.f;
      for (int k = 0; k < lp; ++k) V2[M * lp + k] = 0.f;
      auto t1 = now();
      // Blur along each of the d+1 axes.
      for (int j = 0; j < d1; ++j) {
        const int* nb = L.nbr.data() + static_cast<int64_t>(j) * M * 2;
#pragma omp parallel for num_threads(nt) schedule(static) if(M * lp > (1 << 18))  // small lattices: a barrier costs more than the pass
        for (int64_t v = 0; v < M; ++v) meanfield::blur_vertex(V, V2, v, nb[2 * v], nb[2 * v + 1], lp);
        std::swap(V, V2);
      }
      auto t2 = now();
      // Slice into the logits: A = -U + sum_t compat_t * message_t(Q).
      const bool first = t == 0;
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int64_t p = 0; p < N; ++p) {
        float acc[LP > 0 ? LP : 1];
        float* a = A + p * lp;
        float* s = LP > 0 ? acc : a;
        if (LP > 0 || first) {
          const float* src = first ? U + p * lp : a;
          for (int k = 0; k < lp; ++k) s[k] = src[k];
        }
        meanfield::slice_pixel(V, L.off.data() + p * d1, L.sw.data() + p * d1, d1, s, lp);
        if (LP > 0)
          for (int k = 0; k < lp; ++k) a[k] = s[k];
      }
      auto t3 = now();
      t_splat += ms(t0, t1);
      t_blur += ms(t1, t2);
      t_slice += ms(t2, t3);
    }
    auto t4 = now();
    const float* logits = lats.empty() ? U : A;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t p = 0; p < N; ++p) meanfield::softmax_row(logits + p * lp, Q + p * lp, lp);
    t_softmax += ms(t4, now());
  }
  if (timer.on)
    std::fprintf(stderr, "  crf splat %.2f blur %.2f slice %.2f softmax %.2f ms\n", t_splat, t_blur, t_slice, t_softmax);

  // Hand back Q in the caller's layout, and the labels.
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t p = 0; p < N; ++p) {
    const int64_t y = p / W, x = p % W;
    const float* q = Q + p * lp;
    if (P.out)
      for (int64_t c = 0; c < C; ++c) P.out[b * P.os[0] + c * P.os[1] + y * P.os[2] + x * P.os[3]] = q[c];
    if (P.labels) {
      int best = 0;
      for (int c = 1; c < C; ++c)
        if (q[c] > q[best]) best = c;
      P.labels[b * P.ls[0] + y * P.ls[1] + x * P.ls[2]] = static_cast<uint8_t>(best);
    }
  }
}

int padded_labels(int64_t C) { return static_cast<int>((C + 3) / 4 * 4); }

void run_image(const Problem& P, int64_t b, int nt) {
  const int64_t N = P.H * P.W;
  std::vector<Lattice> lats(P.terms.size());
  int64_t max_m = 0;
  for (size_t t = 0; t < P.terms.size(); ++t) {
    build_lattice(lats[t], P.terms[t], b, P.H, P.W, P.rounding, P.atomic_splat, nt);
    max_m = std::max<int64_t>(max_m, lats[t].M);
  }
  const int lp = padded_labels(P.C);
  StageTimer timer;
  Workspace ws;
  ws.unary.resize(N * lp);
  ws.q.resize(N * lp);
  if (!lats.empty()) {
    ws.a.resize(N * lp);
    ws.v1.resize((max_m + 1) * lp);
    ws.v2.resize((max_m + 1) * lp);
  }
  switch (lp) {
#define FS_CASE(n) \
  case n: mean_field<n>(P, b, lats, lp, ws, nt); break;
    FS_CASE(4) FS_CASE(8) FS_CASE(12) FS_CASE(16) FS_CASE(20) FS_CASE(24) FS_CASE(28) FS_CASE(32)
#undef FS_CASE
    default: mean_field<0>(P, b, lats, lp, ws, nt);
  }
  timer("mean field total");
}

}  // namespace

int64_t densecrf_cpu_bytes(int64_t H, int64_t W, int64_t C, const int* term_dims, int n_terms) {
  // Mirrors the allocations above, with every simplex corner a distinct vertex (M = N (d+1)).
  const int64_t N = H * W, lp = padded_labels(C);
  int64_t kept_total = 0, build_peak = 0, max_m = 0;
  for (int t = 0; t < n_terms; ++t) {
    const int64_t d = term_dims[t], d1 = d + 1, corners = N * d1, M = corners;
    const int64_t kept = corners * 4 * 4 + (M + 1) * 4 + d1 * M * 2 * 4;  // off, sw, pix, w, ptr, nbr
    const int64_t cap = static_cast<int64_t>(pow2_at_least(2 * static_cast<uint64_t>(corners)));
    // Largest moment of the build: the grown table and the one before it (a quarter of its size)
    // during a rehash, or the table with the neighbours, CSR cursors and normalisation buffers.
    const int64_t table = cap * d1 * 4 + M * std::max<int64_t>(d, 1) * 4;
    const int64_t transient = table + table / 4 + static_cast<int64_t>(omp_get_max_threads()) * (M + 1) * 4 +
                              4 * (M + 1) * 4 + N * 4;
    build_peak = std::max(build_peak, kept_total + transient + kept);
    kept_total += kept;
    max_m = std::max(max_m, M);
  }
  const int64_t mean_field = 3 * N * lp * 4 + 2 * (max_m + 1) * lp * 4;  // -U, Q, logits; two vertex buffers
  return std::max(build_peak, kept_total + mean_field);
}

void densecrf_cpu(const Problem& P, int num_threads) {
  const int nt = std::max(1, num_threads);
  for (const Term& t : P.terms) {
    const int64_t corners = P.H * P.W * (t.dim() + 1);
    if (2 * corners >= (int64_t{1} << 31))
      throw std::invalid_argument("densecrf: image too large for the lattice (H*W*(feature dims+1) must be < 2^30)");
  }
  if (P.B >= 2 && nt >= 2) {
    // Whole images per thread: no synchronisation inside an image, and each image's memory stays
    // local to one core.
    std::exception_ptr error;
#pragma omp parallel for num_threads(static_cast<int>(std::min<int64_t>(nt, P.B))) schedule(dynamic, 1)
    for (int64_t b = 0; b < P.B; ++b) {
      try {
        run_image(P, b, 1);
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
      for (int64_t b = 0; b < P.B; ++b) run_image(P, b, nt);
    } catch (...) {
      omp_set_dynamic(dynamic);
      throw;
    }
    omp_set_dynamic(dynamic);
  }
}

}  // namespace crf
}  // namespace fastseg
