// Builds the permutohedral lattice of each pairwise term of one image (the math is
// common/permutohedral.h, shared with the CUDA build): per simplex corner the dense vertex id and a
// weight (barycentric weight times the pixel's symmetric normalisation), per vertex its 2 (d+1)
// blur neighbours.
//
// The work is split into fixed pixel chunks (crf_util.h) so that two or more threads share it, and
// the result does not depend on the thread count:
//  1. locate + insert, one task per (term, chunk): eight pixels' simplexes at a time in vector lanes
//     (cpu/locate8.h), then per pixel the vertex ids: the previous pixel's simplex (compared lane by
//     lane), a small simplex cache, or the chunk's own hash table (local ids);
//  2. merge, one task per term: the other chunks' vertices go into chunk 0's table (new ids in
//     chunk order) and their pixels' ids are renumbered;
//  3. blur neighbours, vertex ranges in parallel: each vertex looks up its neighbour on the +1 side
//     of every axis, and being that vertex's -1 neighbour is recorded at the same time;
//  4. normalisation n = K * 1: splat per chunk, add in chunk order, blur per term, then per pixel
//     norm = 1 / sqrt(n + 1e-20) folded into the corner weights.
#include "cpu/crf_lattice.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <vector>

#include "common/permutohedral.h"
#include "cpu/locate8.h"
#include "cpu/simd8.h"

namespace fastseg {
namespace crf {
namespace {

using lattice::HashTable;
using lattice::kEmpty;
using lattice::kMaxDim;
using simd::v8f;
using simd::v8i;

const char* const kBadFeature =
    "densecrf: a feature is NaN, infinite or too large for the lattice (a scale such as srgb or sxy, or a "
    "feature channel, is far out of range)";

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
  // Features of pixels p .. p+n-1 (n <= 8) of image b into lane k of f[j] (feature j of pixel p+k);
  // lanes past n repeat the last pixel.
  void features8(const Term& t, int64_t b, int64_t p, int n, int64_t W, float (*f)[8]) const {
    int64_t y = p / W, x = p % W;
    for (int k = 0; k < 8; ++k) {
      if (k >= n) {
        for (int j = 0; j < t.dim(); ++j) f[j][k] = f[j][n - 1];
        continue;
      }
      int j = 0;
      if (t.use_xy) {
        f[j++][k] = fx[x];
        f[j++][k] = fy[y];
      }
      const int64_t base = b * t.cs[0] + y * t.cs[1] + x * t.cs[2];
      if (t.channel_type == kUInt8) {
        const uint8_t* ch = static_cast<const uint8_t*>(t.channels) + base;
        for (int c = 0; c < t.K; ++c) f[j++][k] = lut[c * 256 + ch[c * t.cs[3]]];
      } else if (t.channel_type == kFloat32) {
        const float* ch = static_cast<const float*>(t.channels) + base;
        for (int c = 0; c < t.K; ++c) f[j++][k] = ch[c * t.cs[3]] / t.divisor[c];
      }
      if (++x == W) {
        x = 0;
        ++y;
      }
    }
  }
};

// Lattice vertices of one chunk (or, after the merge, of the whole image): the shared hash table
// (common/permutohedral.h), used by one thread at a time here. It starts small (natural images have
// few vertices, and a small table stays in cache) and grows 4x when it runs out of ids; ids survive
// the rehash.
struct VertexTable {
  int d = 0;
  int64_t max_ids = 0;
  uint64_t cap = 0;
  int count = 0;
  Array<int> slots, keys;
  HashTable view{};

  static int limit_of(uint64_t cap, int64_t max_ids) {
    return static_cast<int>(std::min<uint64_t>(cap / 2, static_cast<uint64_t>(max_ids)));
  }
  void init(int dim, int64_t most, int64_t expected) {
    d = dim;
    max_ids = most;
    cap = std::min(pow2_at_least(std::max<uint64_t>(4096, static_cast<uint64_t>(expected))),
                   pow2_at_least(2 * static_cast<uint64_t>(max_ids)));
    slots.resize(static_cast<int64_t>(cap));
    keys.resize(static_cast<int64_t>(limit_of(cap, max_ids)) * std::max(d, 1));
    std::fill(slots.data(), slots.data() + cap, kEmpty);
    count = 0;
    view = HashTable{slots.data(), keys.data(), &count, static_cast<uint32_t>(cap - 1), d, limit_of(cap, max_ids)};
  }
  void grow() {
    const int have = view.limit;  // every id below the limit is a complete vertex
    cap = std::min(cap * 4, pow2_at_least(2 * static_cast<uint64_t>(max_ids)));
    Array<int> new_slots, new_keys;
    new_slots.resize(static_cast<int64_t>(cap));
    new_keys.resize(static_cast<int64_t>(limit_of(cap, max_ids)) * std::max(d, 1));
    std::fill(new_slots.data(), new_slots.data() + cap, kEmpty);
    std::memcpy(new_keys.data(), keys.data(), sizeof(int) * static_cast<size_t>(have) * d);
    slots = std::move(new_slots);
    keys = std::move(new_keys);
    count = have;
    view = HashTable{slots.data(), keys.data(), &count, static_cast<uint32_t>(cap - 1), d, limit_of(cap, max_ids)};
    for (int id = 0; id < have; ++id) lattice::hash_insert(view, keys.data() + static_cast<int64_t>(id) * d, id);
  }
  int insert(const int* key, uint32_t hash) {
    for (;;) {
      const int id = lattice::hash_insert_hashed(view, key, hash);
      if (id >= 0) return id;
      grow();
    }
  }
  const int* key(int id) const { return keys.data() + static_cast<int64_t>(id) * d; }
  void release() {
    slots.release();
    keys.release();
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

// Per term: what the phases share.
struct TermBuild {
  const Term* term = nullptr;
  Lattice* L = nullptr;
  std::unique_ptr<FeatureTables> ft;
  float scale[kMaxDim];
  std::vector<VertexTable> tables;  // one per chunk; after the merge, tables[0] holds the image's
  std::vector<Array<float>> ones;   // per chunk: the splat of ones (normalisation)
};

// Ids of the d+1 vertices of the simplex (rem0, rank): from the cache, else from the table.
template <int D>
inline void simplex_ids(const int* rem0, const int* rank, int d, VertexTable& table,
                        SimplexCache<cache_d1<D>>& cache, int* ids) {
  constexpr int kD1 = cache_d1<D>;
  const int d1 = d + 1;
  uint32_t h = 0;
  for (int i = 0; i < d1; ++i) h = (h ^ static_cast<uint32_t>(rem0[i] * (d1 + 1) + rank[i])) * 0x9E3779B1u;
  auto& e = cache.e[(h >> 12) & (SimplexCache<kD1>::kEntries - 1)];
  bool same = e.valid;
  for (int i = 0; i < d1 && same; ++i) same = rem0[i] == e.rem0[i] && rank[i] == e.rank[i];
  if (!same) {
    // All d+1 keys first, their slots prefetched, so the (cache-missing) probes overlap.
    int keys[kD1][kMaxDim > 0 ? kMaxDim : 1];
    uint32_t hashes[kD1];
    for (int r = 0; r < d1; ++r) {
      lattice::vertex_key(rem0, rank, d, r, keys[r]);
      hashes[r] = lattice::hash_key(keys[r], d);
      __builtin_prefetch(table.view.slots + (hashes[r] & table.view.mask));
    }
    for (int r = 0; r < d1; ++r) e.ids[r] = table.insert(keys[r], hashes[r]);
    for (int i = 0; i < d1; ++i) {
      e.rem0[i] = rem0[i];
      e.rank[i] = rank[i];
    }
    e.valid = true;
  }
  for (int r = 0; r < d1; ++r) ids[r] = e.ids[r];
}

// Phase 1 for pixels [p0, p1) of one term (p0 a multiple of 8): simplexes, barycentric weights
// (into L.w) and chunk-local vertex ids (into L.off). `reference`: the shared scalar lattice::locate
// per pixel instead of locate8 (for the tests; the results are the same).
template <int D>
void locate_chunk(TermBuild& tb, int64_t b, int64_t W, int64_t p0, int64_t p1, int rounding, int chunk,
                  bool reference) {
  const Term& term = *tb.term;
  const int d = D > 0 ? D : term.dim();
  const int d1 = d + 1;
  VertexTable& table = tb.tables[chunk];
  table.init(d, (p1 - p0) * d1, (p1 - p0) / 8);
  std::unique_ptr<SimplexCache<cache_d1<D>>> cache(new SimplexCache<cache_d1<D>>());
  int* off = tb.L->off.data();
  float* bary_all = tb.L->w.data();
  alignas(32) float f[kMaxDim][8];
  alignas(32) int rem0[kMaxDim + 1][8], rank[kMaxDim + 1][8];
  alignas(32) float bary[kMaxDim + 1][8];
  lattice::Simplex8 s;
  v8i prev_rem0[kMaxDim + 1] = {}, prev_rank[kMaxDim + 1] = {};  // lane 7: the previous block's last pixel
  for (int64_t p = p0; p < p1; p += 8) {
    const int n = static_cast<int>(std::min<int64_t>(8, p1 - p));
    tb.ft->features8(term, b, p, n, W, f);
    if (reference) {
      for (int k = 0; k < n; ++k) {
        float fk[kMaxDim], bk[kMaxDim + 1];
        int r0[kMaxDim + 1], rk[kMaxDim + 1];
        for (int j = 0; j < d; ++j) fk[j] = f[j][k];
        if (!lattice::locate<D>(fk, tb.scale, d, rounding, r0, rk, bk)) throw std::invalid_argument(kBadFeature);
        for (int i = 0; i <= d; ++i) {
          s.rem0[i][k] = r0[i];
          s.rank[i][k] = rk[i];
          s.bary[i][k] = bk[i];
        }
      }
    } else {
      v8f fv[kMaxDim];
      for (int j = 0; j < d; ++j) fv[j] = simd::load8(f[j]);
      if (simd::any8(lattice::locate8<D>(fv, tb.scale, d, rounding, s))) throw std::invalid_argument(kBadFeature);
    }
    // Lanes whose simplex is the previous pixel's (lane 0: the previous block's lane 7).
    v8i same = p > p0 ? simd::splat8i(-1) : simd::lane_index8() > 0;
    for (int i = 0; i <= d; ++i) {
      const v8i r0 = s.rem0[i], rk = s.rank[i];
      const v8i before_r0 = __builtin_shufflevector(prev_rem0[i], r0, 7, 8, 9, 10, 11, 12, 13, 14);
      const v8i before_rk = __builtin_shufflevector(prev_rank[i], rk, 7, 8, 9, 10, 11, 12, 13, 14);
      same &= (r0 == before_r0) & (rk == before_rk);
      prev_rem0[i] = r0;
      prev_rank[i] = rk;
      simd::store8(bary[i], s.bary[i]);
      *reinterpret_cast<v8i*>(rem0[i]) = r0;
      *reinterpret_cast<v8i*>(rank[i]) = rk;
    }
    for (int k = 0; k < n; ++k) {
      const int64_t q = p + k;
      int* o = off + q * d1;
      float* w = bary_all + q * d1;
      for (int r = 0; r < d1; ++r) w[r] = bary[r][k];
      if (same[k]) {
        for (int r = 0; r < d1; ++r) o[r] = o[r - d1];
        continue;
      }
      int r0[kMaxDim + 1], rk[kMaxDim + 1];
      for (int i = 0; i <= d; ++i) {
        r0[i] = rem0[i][k];
        rk[i] = rank[i][k];
      }
      simplex_ids<D>(r0, rk, d, table, *cache, o);
    }
  }
}

// Phase 2 for one term: the other chunks' vertices into chunk 0's table, their pixels renumbered.
void merge_chunks(TermBuild& tb, int64_t N, int chunks) {
  Lattice& L = *tb.L;
  VertexTable& all = tb.tables[0];
  all.max_ids = N * L.d1;
  for (int c = 1; c < chunks; ++c) {
    VertexTable& part = tb.tables[c];
    std::vector<int> id(part.count);
    for (int k = 0; k < part.count; ++k) id[k] = all.insert(part.key(k), lattice::hash_key(part.key(k), L.d));
    part.release();
    int64_t p0, p1;
    chunk_pixels(N, c, chunks, p0, p1);
    int* off = L.off.data();
    for (int64_t i = p0 * L.d1; i < p1 * L.d1; ++i) off[i] = id[off[i]];
  }
  L.M = all.count;
}

// Phase 3 for vertices [v0, v1) of one term: along axis j, n2 = key + 1 with -d on j is looked up,
// and v is n2's n1 (key - 1 with +d on j); the n1 side of every vertex starts as "none" (M).
void find_neighbours(const VertexTable& table, Lattice& L, int64_t v0, int64_t v1) {
  const int d = L.d, M = L.M;
  int* nbr = L.nbr.data();
  for (int64_t v = v0; v < v1; ++v) {
    int nk[kMaxDim];
    for (int j = 0; j <= d; ++j) {
      lattice::neighbour_key(table.key(static_cast<int>(v)), d, j, 1, nk);
      const int u = lattice::hash_find(table.view, nk);
      int* axis = nbr + static_cast<int64_t>(j) * M * 2;
      axis[2 * v + 1] = u < 0 ? M : u;
      if (u >= 0) axis[2 * static_cast<int64_t>(u)] = static_cast<int>(v);
    }
  }
}

void locate_any(TermBuild& tb, int64_t b, int64_t W, int64_t p0, int64_t p1, int rounding, int chunk, bool ref) {
  switch (tb.term->dim()) {  // the common dimensions get unrolled lattice code
    case 2: locate_chunk<2>(tb, b, W, p0, p1, rounding, chunk, ref); break;
    case 5: locate_chunk<5>(tb, b, W, p0, p1, rounding, chunk, ref); break;
    default: locate_chunk<0>(tb, b, W, p0, p1, rounding, chunk, ref);
  }
}

}  // namespace

void build_lattices(const Problem& P, int64_t b, const std::vector<bool>& todo, std::vector<Lattice>& lats, int nt) {
  const int64_t N = P.H * P.W;
  const int chunks = pixel_chunks(N);
  std::vector<TermBuild> builds;
  for (size_t t = 0; t < todo.size(); ++t) {
    if (!todo[t]) continue;
    const Term& term = P.terms[t];
    TermBuild tb;
    tb.term = &term;
    tb.L = &lats[t];
    const int d = term.dim();
    tb.L->d = d;
    tb.L->d1 = d + 1;
    tb.L->N = N;
    tb.L->slice_scale = lattice::slice_alpha(d) * term.compat;
    tb.L->off.resize(N * (d + 1));
    tb.L->w.resize(N * (d + 1));  // barycentric weights until the normalisation is known
    tb.ft.reset(new FeatureTables(term, P.H, P.W));
    lattice::scale_factors(d, tb.scale);
    tb.tables.resize(chunks);
    tb.ones.resize(chunks);
    builds.push_back(std::move(tb));
  }
  const int T = static_cast<int>(builds.size());
  if (T == 0) return;
  // Costliest first (the bilateral term), so two threads end together.
  std::stable_sort(builds.begin(), builds.end(),
                   [](const TermBuild& a, const TermBuild& c) { return a.term->dim() > c.term->dim(); });
  const int tasks = T * chunks;
  const int team = std::max(1, std::min(nt, tasks));
  const int ranges = team;  // vertex ranges per term for the neighbour search
  StageTimer timer;
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  auto guard = [&](auto&& work) {
    if (failed.load()) return;
    try {
      work();
    } catch (...) {
#pragma omp critical(fastseg_crf_build_error)
      if (!error) error = std::current_exception();
      failed.store(true);
    }
  };
  // Task i of a per-(term, chunk) phase: its term, chunk and pixel range.
  struct ChunkTask {
    TermBuild* tb;
    int c;
    int64_t p0, p1;
  };
  auto chunk_task = [&](int i) {
    ChunkTask task{&builds[i / chunks], i % chunks, 0, 0};
    chunk_pixels(N, task.c, chunks, task.p0, task.p1);
    return task;
  };
  double stamp[4] = {0, 0, 0, 0};  // process CPU time after phases 1, 2, 3 + 4a, 4 (all threads)
#pragma omp parallel num_threads(team)
  {
    const bool clock = timer.on && omp_get_thread_num() == 0;
    // 1. Locate and insert.
#pragma omp for schedule(dynamic, 1)
    for (int i = 0; i < tasks; ++i) {
      guard([&] {
        const ChunkTask k = chunk_task(i);
        locate_any(*k.tb, b, P.W, k.p0, k.p1, P.rounding, k.c, P.reference_lattice);
      });
    }
    if (clock) stamp[0] = cpu_ms();
    // 2. Merge the chunks; allocate what the later phases fill.
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < T; ++t) {
      guard([&] {
        TermBuild& tb = builds[t];
        merge_chunks(tb, N, chunks);
        Lattice& L = *tb.L;
        L.nbr.resize(static_cast<int64_t>(L.d1) * L.M * 2);
        for (int64_t i = 0; i < static_cast<int64_t>(L.d1) * L.M; ++i) L.nbr[2 * i] = L.M;
        for (auto& a : tb.ones) {
          a.resize(L.M + 1);
          std::fill(a.data(), a.data() + L.M + 1, 0.f);
        }
      });
    }
    if (clock) stamp[1] = cpu_ms();
    // 3. Blur neighbours; 4a. the splat of ones per chunk.
#pragma omp for schedule(dynamic, 1)
    for (int i = 0; i < T * ranges; ++i) {
      guard([&] {
        TermBuild& tb = builds[i / ranges];
        int64_t v0, v1;
        chunk(tb.L->M, i % ranges, ranges, v0, v1);
        find_neighbours(tb.tables[0], *tb.L, v0, v1);
      });
    }
#pragma omp for schedule(dynamic, 1)
    for (int i = 0; i < tasks; ++i) {
      guard([&] {
        const ChunkTask k = chunk_task(i);
        const int d1 = k.tb->L->d1;
        const int* off = k.tb->L->off.data();
        const float* bary = k.tb->L->w.data();
        float* a = k.tb->ones[k.c].data();
        for (int64_t q = k.p0 * d1; q < k.p1 * d1; ++q) a[off[q]] += bary[q];
      });
    }
    if (clock) stamp[2] = cpu_ms();
    // 4b. Add the chunks' splats and blur, one term per task.
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < T; ++t) {
      guard([&] {
        TermBuild& tb = builds[t];
        tb.tables[0].release();
        const Lattice& L = *tb.L;
        const int64_t M = L.M;
        float* a = tb.ones[0].data();
        for (int c = 1; c < chunks; ++c)
          for (int64_t v = 0; v < M; ++v) a[v] += tb.ones[c][v];
        Array<float> scratch;
        scratch.resize(M + 1);
        float* x = a;
        float* y = scratch.data();
        y[M] = 0.f;
        for (int j = 0; j < L.d1; ++j) {
          const int* nb = L.nbr.data() + static_cast<int64_t>(j) * M * 2;
          for (int64_t v = 0; v < M; ++v) y[v] = x[v] + 0.5f * (x[nb[2 * v]] + x[nb[2 * v + 1]]);
          std::swap(x, y);
        }
        if (x != a) std::memcpy(a, x, sizeof(float) * M);
      });
    }
    // 4c. norm = 1 / sqrt(K * 1 + 1e-20) per pixel, folded into its corner weights.
#pragma omp for schedule(dynamic, 1)
    for (int i = 0; i < tasks; ++i) {
      guard([&] {
        const ChunkTask k = chunk_task(i);
        const int d1 = k.tb->L->d1;
        const float alpha = lattice::slice_alpha(k.tb->L->d);
        const int* off = k.tb->L->off.data();
        float* w = k.tb->L->w.data();
        const float* a = k.tb->ones[0].data();
        for (int64_t p = k.p0; p < k.p1; ++p) {
          float s = 0.f;
          for (int r = 0; r < d1; ++r) s += w[p * d1 + r] * a[off[p * d1 + r]] * alpha;
          const float norm = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s) + 1e-20));
          for (int r = 0; r < d1; ++r) w[p * d1 + r] *= norm;
        }
      });
    }
    if (clock) stamp[3] = cpu_ms();
  }
  if (error) std::rethrow_exception(error);
  if (timer.on) {
    std::fprintf(stderr, "  crf lattice locate %.2f merge %.2f neighbours %.2f normalise %.2f ms (CPU, all threads)\n",
                 stamp[0] - timer.t, stamp[1] - stamp[0], stamp[2] - stamp[1], stamp[3] - stamp[2]);
    for (const TermBuild& tb : builds)
      std::fprintf(stderr, "  crf lattice d=%d: %d vertices for %lld pixels\n", tb.L->d, tb.L->M, (long long)N);
  }
}

int64_t lattice_kept_bytes(int64_t N, int d) {
  const int64_t d1 = d + 1, corners = N * d1, M = corners;
  return corners * 2 * 4 + d1 * M * 2 * 4;  // off, w; nbr
}

int64_t lattice_build_bytes(int64_t N, int64_t H, int64_t W, int d) {
  // The chunks' tables (each for its share of the corners) and, while merging, the image's table
  // grown to its final size plus the one before it (a quarter of that); the simplex caches, the
  // feature tables and the normalisation buffers.
  auto table_bytes = [d](int64_t corners) {
    const int64_t cap = static_cast<int64_t>(pow2_at_least(2 * static_cast<uint64_t>(corners)));
    return cap * 4 + (cap / 2) * std::max<int64_t>(d, 1) * 4;
  };
  const int64_t corners = N * (d + 1), M = corners;
  const int chunks = pixel_chunks(N);
  int64_t total = table_bytes(corners) + table_bytes(corners) / 4;
  for (int c = 1; c < chunks; ++c) {
    int64_t p0, p1;
    chunk_pixels(N, c, chunks, p0, p1);
    total += table_bytes((p1 - p0) * (d + 1));
  }
  total += chunks * static_cast<int64_t>(sizeof(SimplexCache<kMaxDim + 1>::Entry)) * 4096;
  return total + (chunks + 1) * (M + 1) * 4 + (H + W + 4096) * 4;
}

}  // namespace crf
}  // namespace fastseg
