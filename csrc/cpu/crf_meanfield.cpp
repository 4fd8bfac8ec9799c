// Mean field of the CPU dense CRF: pydensecrf's iterations, built for
// instruction-level parallelism and for several cores.
//
//  * One pass over the pixels per iteration: slice every term, softmax, and splat the new Q into
//    every term's vertex buffer (a scatter in pixel order), so Q is never stored; then the terms
//    blur (one task per term). Pixels are split into fixed chunks (crf_util.h), each splatting into
//    its own buffer, added in chunk order: the same result for any thread count, two barriers an
//    iteration.
//  * Pixels go in blocks of eight. Slice and splat work on each pixel's label row (vertex rows are
//    label-contiguous, padded to a multiple of 8 floats); in between, an 8x8 transpose turns the
//    block into one vector per label over its eight pixels, so the softmax of eight pixels is plain
//    lane-wise arithmetic over the real labels only: no horizontal reductions, no exponentials of
//    padding lanes, and eight independent dependency chains instead of one. The unary -U is kept in
//    that label-major block layout (C floats per pixel).
//  * A corner's weight (barycentric weight times the pixel's symmetric normalisation) serves both
//    splat and slice; alpha and the Potts weight scale the blurred vertex values instead.
// Float operations do not trap here (no FP exceptions are enabled), and saying so lets g++ if-convert
// and vectorise the exp/log selects; it changes no result. (First, so the whole file agrees and
// inlining is not blocked by differing options.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "cpu/crf_meanfield.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "common/meanfield.h"
#include "cpu/simd8.h"

namespace fastseg {
namespace crf {
namespace {

using simd::v8f;
using simd::v8i;

// Per-term vertex buffers: `chunks` splat targets (at least 2: after the merge they are the blur's
// ping-pong scratch) and the blurred result the slice reads. Row M is the "no neighbour" row and
// stays 0.
struct TermBuffers {
  std::vector<Array<float>> splat;
  Array<float> blurred;
};

// Raw pointers of one term for a pixel pass (hoisted out of the per-pixel loop).
struct TermView {
  const int* off;
  const float* w;
  const float* blurred;
  float* splat;
  int d1;
};

// acc = sum over the D1 corners of pixel p of weight * blurred vertex row (D1 = 0: d1 at run time).
template <int D1, int LP8>
inline void slice_corners(const TermView& tv, int64_t p, v8f* acc, int n8) {
  const int d1 = D1 > 0 ? D1 : tv.d1;
  const int* o = tv.off + p * d1;
  const float* w = tv.w + p * d1;
  for (int i = 0; i < n8; ++i) acc[i] = v8f{};
  for (int r = 0; r < d1; ++r) {
    const float* v = tv.blurred + static_cast<int64_t>(o[r]) * (n8 * 8);
    const v8f wr = simd::splat8(w[r]);
    for (int i = 0; i < (LP8 > 0 ? LP8 : n8); ++i) acc[i] += wr * simd::load8(v + 8 * i);
  }
}

// Vertex rows += weight * q over the D1 corners of pixel p.
template <int D1, int LP8>
inline void splat_corners(const TermView& tv, int64_t p, const v8f* q, int n8) {
  const int d1 = D1 > 0 ? D1 : tv.d1;
  const int* o = tv.off + p * d1;
  const float* w = tv.w + p * d1;
  for (int r = 0; r < d1; ++r) {
    float* v = tv.splat + static_cast<int64_t>(o[r]) * (n8 * 8);
    const v8f wr = simd::splat8(w[r]);
    for (int i = 0; i < (LP8 > 0 ? LP8 : n8); ++i) simd::store8(v + 8 * i, simd::load8(v + 8 * i) + wr * q[i]);
  }
}

template <int LP8>
inline void slice_term(const TermView& tv, int64_t p, v8f* acc, int n8) {
  switch (tv.d1) {  // the usual terms (2-D positions; positions and RGB) unrolled
    case 3: slice_corners<3, LP8>(tv, p, acc, n8); break;
    case 6: slice_corners<6, LP8>(tv, p, acc, n8); break;
    default: slice_corners<0, LP8>(tv, p, acc, n8);
  }
}

template <int LP8>
inline void splat_term(const TermView& tv, int64_t p, const v8f* q, int n8) {
  switch (tv.d1) {
    case 3: splat_corners<3, LP8>(tv, p, q, n8); break;
    case 6: splat_corners<6, LP8>(tv, p, q, n8); break;
    default: splat_corners<0, LP8>(tv, p, q, n8);
  }
}

constexpr int kMaxGroups = 32;  // 8-label groups: at most 256 labels

// What one pixel pass does.
struct PassKind {
  bool first;  // -U from the probabilities (stored for the later passes); nothing to slice yet
  bool splat;  // splat the new Q
  bool out;    // write Q (and labels) out
};

// Pixel (y, x) of linear index p, for strided reads and writes.
inline int64_t strided(const int64_t* s, int64_t b, int64_t c, int64_t p, int64_t W) {
  return b * s[0] + c * s[1] + (p / W) * s[2] + (p % W) * s[3];
}

// Loads the block's probabilities (or logits) into one vector per label and turns them into -U.
// Lanes past the image end get a harmless value. Returns whether any value was invalid.
template <int LP8>
inline bool unary_block(const Problem& P, int64_t b, int64_t p, int n, v8f* lab) {
  const int64_t C = P.C, W = P.W;
  const bool planar = P.ps[3] == 1 && P.ps[2] == W;  // each label's plane contiguous over pixels
  const v8i valid = simd::lane_index8() < n;
  v8i bad = v8i{};
  for (int64_t c = 0; c < C; ++c) {
    v8f v;
    if (planar && n == 8) {
      v = simd::loadu8(P.probs + b * P.ps[0] + c * P.ps[1] + p);
    } else {
      v = simd::splat8(1.f);
      for (int k = 0; k < n; ++k) v[k] = P.probs[strided(P.ps, b, c, p + k, W)];
    }
    if (P.logits) {
      bad |= valid & ~(simd::select8(v < 0.f, -v, v) <= 3.4e38f);  // NaN or infinite
      lab[c] = simd::select8(valid, v, v8f{});
    } else {
      bad |= valid & ~(v >= 0.f);  // negative or NaN
      v = simd::select8(v < 1e-5f, simd::splat8(1e-5f), v);  // meanfield::neg_unary: log(clip(p, 1e-5, 1))
      v = simd::select8(v > 1.0f, simd::splat8(1.0f), v);
      lab[c] = simd::select8(valid, simd::log8(v), v8f{});
    }
  }
  return simd::any8(bad);
}

// Softmax over the C label vectors (lanes are pixels): subtract the max, exponentiate, scale by the
// inverse sum.
inline void softmax_block(v8f* lab, int64_t C) {
  v8f m = lab[0];
  for (int64_t c = 1; c < C; ++c) m = simd::max8(m, lab[c]);
  v8f s = v8f{};
  for (int64_t c = 0; c < C; ++c) {
    lab[c] = simd::exp8(lab[c] - m);
    s += lab[c];
  }
  const v8f inv = 1.0f / s;
  for (int64_t c = 0; c < C; ++c) lab[c] *= inv;
}

// Writes the block's Q (and argmax labels, the first label on ties) to the outputs.
inline void write_block(const Problem& P, int64_t b, int64_t p, int n, const v8f* lab) {
  const int64_t C = P.C, W = P.W;
  if (P.out) {
    const bool planar = P.os[3] == 1 && P.os[2] == W;
    for (int64_t c = 0; c < C; ++c) {
      if (planar && n == 8) simd::storeu8(P.out + b * P.os[0] + c * P.os[1] + p, lab[c]);
      else
        for (int k = 0; k < n; ++k) P.out[strided(P.os, b, c, p + k, W)] = lab[c][k];
    }
  }
  if (P.labels) {
    v8f best = lab[0];
    v8i arg = v8i{};
    for (int64_t c = 1; c < C; ++c) {
      const v8i gt = lab[c] > best;
      best = simd::select8(gt, lab[c], best);
      arg = simd::select8i(gt, simd::splat8i(static_cast<int>(c)), arg);
    }
    const bool contiguous = P.ls[2] == 1 && P.ls[1] == W;
    for (int k = 0; k < n; ++k) {
      const int64_t q = p + k;
      P.labels[b * P.ls[0] + (contiguous ? q : (q / W) * P.ls[1] + (q % W) * P.ls[2])] = static_cast<uint8_t>(arg[k]);
    }
  }
}

// One pass over pixels [p0, p1) (p0 a multiple of 8) of image b: A = -U + sum_t slice_t,
// Q = softmax(A), then splat Q into every term's chunk buffer and/or write it out.
// TWO_TERMS: pydensecrf's usual pair (a 2-D Gaussian term, then a 5-D bilateral one) with their
// corner counts fixed at compile time.
template <int LP8, bool TWO_TERMS>
void pixel_pass(const Problem& P, int64_t b, int64_t p0, int64_t p1, const std::vector<TermView>& tv, float* U,
                int n8_runtime, PassKind kind, int& bad_out) {
  const int n8 = LP8 > 0 ? LP8 : n8_runtime;
  const int64_t C = P.C;
  const int T = static_cast<int>(tv.size());
  v8f lab[(LP8 > 0 ? LP8 : kMaxGroups) * 8];     // label-major: lab[c] holds label c of the 8 pixels
  v8f rows[8][LP8 > 0 ? LP8 : kMaxGroups];       // pixel-major: rows[j] is pixel j's label row
  v8f tmp[LP8 > 0 ? LP8 : kMaxGroups];
  int bad = 0;
  for (int64_t p = p0; p < p1; p += 8) {
    const int n = static_cast<int>(std::min<int64_t>(8, p1 - p));
    float* ub = U + (p / 8) * C * 8;
    if (kind.first) {
      bad |= unary_block<LP8>(P, b, p, n, lab);
      for (int64_t c = 0; c < C; ++c) simd::store8(ub + 8 * c, lab[c]);
    } else {
      for (int j = 0; j < n; ++j) {
        if (TWO_TERMS) {
          slice_corners<3, LP8>(tv[0], p + j, rows[j], n8);
          slice_corners<6, LP8>(tv[1], p + j, tmp, n8);
          for (int i = 0; i < n8; ++i) rows[j][i] += tmp[i];
        } else {
          for (int i = 0; i < n8; ++i) rows[j][i] = v8f{};
          for (int t = 0; t < T; ++t) {
            slice_term<LP8>(tv[t], p + j, tmp, n8);
            for (int i = 0; i < n8; ++i) rows[j][i] += tmp[i];
          }
        }
      }
      for (int j = n; j < 8; ++j)
        for (int i = 0; i < n8; ++i) rows[j][i] = v8f{};
      for (int g = 0; g < n8; ++g) {
        v8f col[8];
        for (int j = 0; j < 8; ++j) col[j] = rows[j][g];
        simd::transpose8(col);
        for (int k = 0; k < 8 && 8 * g + k < C; ++k) lab[8 * g + k] = simd::load8(ub + 8 * (8 * g + k)) + col[k];
      }
    }
    softmax_block(lab, C);
    if (kind.splat) {
      for (int g = 0; g < n8; ++g) {
        v8f col[8];
        for (int k = 0; k < 8; ++k) col[k] = 8 * g + k < C ? lab[8 * g + k] : v8f{};  // padding lanes splat 0
        simd::transpose8(col);
        for (int j = 0; j < 8; ++j) rows[j][g] = col[j];
      }
      for (int j = 0; j < n; ++j) {
        if (P.atomic_splat) {  // the GPU's way (common/meanfield.h), for the tests
          alignas(32) float q[kMaxGroups * 8];
          for (int i = 0; i < n8; ++i) simd::store8(q + 8 * i, rows[j][i]);
          for (const TermView& t : tv)
            meanfield::splat_pixel_atomic(t.splat, t.off + (p + j) * t.d1, t.w + (p + j) * t.d1, t.d1, q, n8 * 8);
        } else if (TWO_TERMS) {
          splat_corners<3, LP8>(tv[0], p + j, rows[j], n8);
          splat_corners<6, LP8>(tv[1], p + j, rows[j], n8);
        } else {
          for (int t = 0; t < T; ++t) splat_term<LP8>(tv[t], p + j, rows[j], n8);
        }
      }
    }
    if (kind.out) write_block(P, b, p, n, lab);
  }
  bad_out |= bad;
}

// Merge the chunk buffers, blur along each of the d+1 axes (ping-pong in the chunk buffers, the
// last axis, scaled by alpha * compat, into `blurred`), and clear the chunk buffers for the next splat.
template <int LP8>
void blur_term(const Lattice& L, TermBuffers& B, int chunks, int n8_runtime) {
  const int n8 = LP8 > 0 ? LP8 : n8_runtime;
  const int lp = n8 * 8;
  const int64_t M = L.M;
  float* V0 = B.splat[0].data();
  float* V1 = B.splat[1].data();
  for (int c = 1; c < chunks; ++c) {
    const float* Vc = B.splat[c].data();
    for (int64_t i = 0; i < M * lp; i += 8) simd::store8(V0 + i, simd::load8(V0 + i) + simd::load8(Vc + i));
  }
  const float* src = V0;
  for (int j = 0; j < L.d1; ++j) {
    const bool last = j == L.d1 - 1;
    float* dst = last ? B.blurred.data() : (src == V0 ? V1 : V0);
    const v8f scale = simd::splat8(last ? L.slice_scale : 1.f);
    const int* nb = L.nbr.data() + static_cast<int64_t>(j) * M * 2;
    for (int64_t v = 0; v < M; ++v) {
      const float* a = src + v * lp;
      const float* n1 = src + static_cast<int64_t>(nb[2 * v]) * lp;
      const float* n2 = src + static_cast<int64_t>(nb[2 * v + 1]) * lp;
      float* o = dst + v * lp;
      for (int i = 0; i < n8; ++i) {
        const v8f s = simd::load8(a + 8 * i) + 0.5f * (simd::load8(n1 + 8 * i) + simd::load8(n2 + 8 * i));
        simd::store8(o + 8 * i, last ? s * scale : s);
      }
    }
    src = dst;
  }
  for (int c = 0; c < chunks; ++c) std::fill(B.splat[c].data(), B.splat[c].data() + M * lp, 0.f);
}

template <int LP8>
void mean_field_lp(const Problem& P, int64_t b, const std::vector<const Lattice*>& lats, int n8, int nt) {
  const int64_t N = P.H * P.W;
  const int lp = n8 * 8;
  const int chunks = pixel_chunks(N);
  const int T = static_cast<int>(lats.size());
  StageTimer timer;
  Array<float> unary;  // -U, label-major blocks of 8 pixels
  unary.resize(blocks_of(N) * P.C * 8);
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
  // Per chunk, the terms' pointers with that chunk's splat target (the atomic test path: one target).
  std::vector<std::vector<TermView>> views(chunks, std::vector<TermView>(T));
  for (int c = 0; c < chunks; ++c)
    for (int t = 0; t < T; ++t)
      views[c][t] = TermView{lats[t]->off.data(), lats[t]->w.data(), bufs[t].blurred.data(),
                             bufs[t].splat[P.atomic_splat ? 0 : c].data(), lats[t]->d1};
  timer("mean field buffers");
  const int team = nt > 1 ? std::min(nt, std::max(chunks, T)) : 1;
  const bool two_terms = T == 2 && lats[0]->d1 == 3 && lats[1]->d1 == 6 && !P.atomic_splat;
  auto pass = [&](int c, PassKind kind, int& bad) {
    int64_t p0, p1;
    chunk_pixels(N, c, chunks, p0, p1);
    if (two_terms) pixel_pass<LP8, true>(P, b, p0, p1, views[c], unary.data(), n8, kind, bad);
    else pixel_pass<LP8, false>(P, b, p0, p1, views[c], unary.data(), n8, kind, bad);
  };
  int bad = 0;
  double t_first = 0, t_pass = 0, t_blur = 0;
#pragma omp parallel num_threads(team) reduction(| : bad)
  {
    const bool master = omp_get_thread_num() == 0;
    const bool clock = master && timer.on;
    double t0 = clock ? cpu_ms() : 0;
    // Pass 0: -U, Q0 = softmax(-U) and its splat (or the answer when there is nothing to iterate).
    const bool only = T == 0 || P.n_iter == 0;
#pragma omp for schedule(static)
    for (int c = 0; c < chunks; ++c) pass(c, PassKind{true, !only, only}, bad);
    // (the implied barrier; `bad` is only known after the region, so a bad input costs the iterations)
    if (clock) t_first = cpu_ms() - t0;
    for (int it = 0; it < (only ? 0 : P.n_iter); ++it) {
      t0 = clock ? cpu_ms() : 0;
#pragma omp for schedule(dynamic, 1)
      for (int t = 0; t < T; ++t) blur_term<LP8>(*lats[t], bufs[t], chunks, n8);
      const double t1 = clock ? cpu_ms() : 0;
      const bool last = it == P.n_iter - 1;
#pragma omp for schedule(static)
      for (int c = 0; c < chunks; ++c) pass(c, PassKind{false, !last, last}, bad);
      if (clock) {
        t_blur += t1 - t0;
        t_pass += cpu_ms() - t1;
      }
    }
  }
  if (bad)
    throw std::invalid_argument(P.logits ? "probs: logits contain NaN or infinite values"
                                         : "probs: probabilities must be >= 0 and not NaN");
  if (timer.on) std::fprintf(stderr, "  crf first pass %.2f blur %.2f pixel passes %.2f ms\n", t_first, t_blur, t_pass);
}

}  // namespace

void mean_field(const Problem& P, int64_t b, const std::vector<const Lattice*>& lats, int nt) {
  const int n8 = padded_labels(P.C) / 8;
  switch (n8) {
    case 1: mean_field_lp<1>(P, b, lats, n8, nt); break;
    case 2: mean_field_lp<2>(P, b, lats, n8, nt); break;
    case 3: mean_field_lp<3>(P, b, lats, n8, nt); break;
    case 4: mean_field_lp<4>(P, b, lats, n8, nt); break;
    default: mean_field_lp<0>(P, b, lats, n8, nt);
  }
}

int64_t mean_field_bytes(int64_t N, int64_t C, const std::vector<int64_t>& vertices) {
  const int64_t splat_buffers = std::max(pixel_chunks(N), 2) + 1;  // chunk targets and the blurred copy
  int64_t total = blocks_of(N) * C * 8 * 4;                          // -U
  for (int64_t M : vertices) total += splat_buffers * (M + 1) * padded_labels(C) * 4;
  return total;
}

}  // namespace crf
}  // namespace fastseg
