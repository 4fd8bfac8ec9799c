// Confusion matrix on the CPU: one pass over the two label maps, per-thread private histograms,
// merged once at the end.
//
// Every pixel is counted into the extended table of common/confusion_layout.h (a row for ignored
// and one for out-of-range targets, a column for out-of-range predictions), so ignoring and
// validation cost no branch in the hot loop.
//
// Byte-sized labels (uint8, the output of upsample_argmax and of PNG label files) are mapped to
// table offsets through two 256-entry lookup tables; wider types are mapped with compares.
// Segmentation maps have long runs of one (target, pred) pair, and back-to-back increments of
// one counter stall on store-to-load forwarding, so small tables are kept in 4 copies and
// consecutive pixels go to different copies.
#include "cpu/confusion_matrix.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "common/confusion_layout.h"
#include "common/threads.h"

namespace fastseg::cpu {
namespace {

using Layout = ConfusionLayout;

// Value -> table offset. Bytes go through a lookup table; wider types through Layout's compares.
template <typename T, bool IsTarget, bool Byte = (sizeof(T) == 1)>
struct Mapper {
  const Layout& L;
  explicit Mapper(const Layout& l) : L(l) {}
  int64_t operator()(T v) const {
    return IsTarget ? L.row(static_cast<int64_t>(v)) : L.col(static_cast<int64_t>(v));
  }
};
template <typename T, bool IsTarget>
struct Mapper<T, IsTarget, true> {
  int32_t off[256];
  explicit Mapper(const Layout& L) {
    for (int b = 0; b < 256; ++b) {
      const int64_t v = static_cast<int64_t>(static_cast<T>(static_cast<uint8_t>(b)));
      off[b] = static_cast<int32_t>(IsTarget ? L.row(v) : L.col(v));
    }
  }
  int32_t operator()(T v) const { return off[static_cast<uint8_t>(v)]; }
};

// Counts n pixels. `step` is the distance between table copies (0 when there is a single copy).
template <bool Contig, typename P, typename T, typename MP, typename MT>
void count_span(const P* __restrict p, int64_t sp, const T* __restrict t, int64_t st, int64_t n,
                const MP& mp, const MT& mt, uint32_t* __restrict tab, int64_t step) {
  if (Contig) sp = st = 1;
  uint32_t* tab1 = tab + step;
  uint32_t* tab2 = tab + 2 * step;
  uint32_t* tab3 = tab + 3 * step;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const int64_t a = mt(t[(i + 0) * st]) + mp(p[(i + 0) * sp]);
    const int64_t b = mt(t[(i + 1) * st]) + mp(p[(i + 1) * sp]);
    const int64_t c = mt(t[(i + 2) * st]) + mp(p[(i + 2) * sp]);
    const int64_t d = mt(t[(i + 3) * st]) + mp(p[(i + 3) * sp]);
    ++tab[a];
    ++tab1[b];
    ++tab2[c];
    ++tab3[d];
  }
  for (; i < n; ++i) ++tab[mt(t[i * st]) + mp(p[i * sp])];
}

// The two inputs' dims, jointly reordered and merged so the innermost dim is as long and as
// contiguous as possible (counting does not depend on the visiting order).
struct Walk {
  std::vector<int64_t> shape, sp, st;  // outer dims first; the last one is the inner loop
  int64_t inner() const { return shape.back(); }
  int64_t rows() const {
    return std::accumulate(shape.begin(), shape.end() - 1, int64_t{1}, std::multiplies<>());
  }
  void row_offsets(int64_t r, int64_t& op, int64_t& ot) const {
    op = ot = 0;
    for (int64_t d = static_cast<int64_t>(shape.size()) - 2; d >= 0; --d) {
      const int64_t i = r % shape[d];
      r /= shape[d];
      op += i * sp[d];
      ot += i * st[d];
    }
  }
};

Walk make_walk(const Buffer& pred, const Buffer& target) {
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < pred.dim(); ++d)
    if (pred.shape[d] != 1) dims.push_back(d);
  // Largest target strides outermost (stable: ties keep their order).
  std::stable_sort(dims.begin(), dims.end(), [&](int64_t a, int64_t b) {
    return std::abs(target.strides[a]) > std::abs(target.strides[b]);
  });
  Walk w;
  for (int64_t d : dims) {
    const int64_t n = pred.shape[d], sp = pred.strides[d], st = target.strides[d];
    if (!w.shape.empty() && w.sp.back() == n * sp && w.st.back() == n * st) {
      w.shape.back() *= n;  // the previous (outer) dim continues this one: merge
      w.sp.back() = sp;
      w.st.back() = st;
    } else {
      w.shape.push_back(n);
      w.sp.push_back(sp);
      w.st.push_back(st);
    }
  }
  if (w.shape.empty()) {  // a single pixel
    w.shape = {1};
    w.sp = {1};
    w.st = {1};
  }
  return w;
}

template <typename P, typename T>
ConfusionFlags run(const Buffer& pred, const Buffer& target, const Layout& L, int64_t* out,
                   int num_threads, bool own_threads, uint64_t fold_every) {
  const Walk w = make_walk(pred, target);
  const int64_t inner = w.inner(), rows = w.rows();
  const int64_t numel = inner * rows;
  const bool contig = w.sp.back() == 1 && w.st.back() == 1;

  // Tasks of ~64k pixels: a slice of one long row, or a run of whole short rows.
  constexpr int64_t kChunk = int64_t{1} << 16;
  const int64_t chunks_per_row = (inner + kChunk - 1) / kChunk;
  const int64_t rows_per_task = inner >= kChunk ? 1 : kChunk / inner;
  const int64_t tasks = (rows + rows_per_task - 1) / rows_per_task * chunks_per_row;

  // Four table copies while they fit in a core's L2 share, one beyond.
  const int64_t copies = L.plane * 4 * int64_t(sizeof(uint32_t)) <= (int64_t{1} << 20) ? 4 : 1;
  const int64_t table_size = L.plane * copies;
  // Threads: at least ~512k pixels (~0.5 ms of work) each, since waking a thread and meeting it
  // at the closing barrier can cost more than a small input (far more on a loaded machine);
  // and the tables under ~256 MB in all.
  int64_t nt = std::min<int64_t>(num_threads, std::max<int64_t>(1, numel >> 19));
  nt = std::max<int64_t>(1, std::min<int64_t>(nt, (int64_t{1} << 28) / (table_size * 4)));

  const P* pbase = pred.data<const P>();
  const T* tbase = target.data<const T>();
  const Mapper<P, false> mp(L);
  const Mapper<T, true> mt(L);
  const int64_t C = L.C, W = L.W;
  ConfusionFlags flags;

  std::atomic<int64_t> next_task{0};  // dynamic schedule: tasks of strided rows differ in cost
  std::mutex fold_mutex;
  parallel_region(static_cast<int>(nt), own_threads, [&](int) {
    std::vector<uint32_t> tab(static_cast<size_t>(table_size), 0u);
    uint64_t pending = 0;  // pixels counted since the last fold: uint32 counters must not wrap

    auto fold = [&]() {
      bool bad_p = false, bad_t = false;
      {
        std::lock_guard<std::mutex> lock(fold_mutex);
        for (int64_t r = 0; r < C + 2; ++r) {
          for (int64_t c = 0; c <= C; ++c) {
            uint64_t n = 0;
            for (int64_t k = 0; k < copies; ++k) n += tab[k * L.plane + r * W + c];
            if (n == 0) continue;
            switch (L.fold(r, c)) {
              case Layout::kCount: out[r * C + c] += static_cast<int64_t>(n); break;
              case Layout::kBadPred: bad_p = true; break;
              case Layout::kBadTarget: bad_t = true; break;
              case Layout::kDrop: break;
            }
          }
        }
        flags.bad_pred |= bad_p;
        flags.bad_target |= bad_t;
      }
      std::fill(tab.begin(), tab.end(), 0u);
      pending = 0;
    };

    const int64_t step = copies == 4 ? L.plane : 0;
    for (int64_t task; (task = next_task.fetch_add(1, std::memory_order_relaxed)) < tasks;) {
      const int64_t r0 = task / chunks_per_row * rows_per_task;
      const int64_t r1 = std::min(rows, r0 + rows_per_task);
      const int64_t begin = (task % chunks_per_row) * kChunk;
      const int64_t n = std::min(kChunk, inner - begin);
      const uint64_t pixels = static_cast<uint64_t>(n * (r1 - r0));
      if (pending > 0 && pending + pixels > fold_every) fold();
      for (int64_t r = r0; r < r1; ++r) {
        int64_t op, ot;
        w.row_offsets(r, op, ot);
        const P* p = pbase + op + begin * w.sp.back();
        const T* t = tbase + ot + begin * w.st.back();
        if (contig) count_span<true>(p, 1, t, 1, n, mp, mt, tab.data(), step);
        else count_span<false>(p, w.sp.back(), t, w.st.back(), n, mp, mt, tab.data(), step);
      }
      pending += pixels;
    }
    if (pending) fold();
  });
  return flags;
}

template <typename F>
void visit_dtype(const Buffer& b, const char* name, F&& f) {
  switch (b.dtype) {
    case DType::kUInt8: return f(uint8_t{});
    case DType::kInt8: return f(int8_t{});
    case DType::kInt16: return f(int16_t{});
    case DType::kInt32: return f(int32_t{});
    case DType::kInt64: return f(int64_t{});
    default: b.unsupported_dtype(name);
  }
}

}  // namespace

ConfusionFlags confusion_matrix(const Buffer& pred, const Buffer& target, int64_t num_classes,
                                bool has_ignore, int64_t ignore_index,
                                int64_t* out, int num_threads, bool own_threads, uint64_t fold_every) {
  if (num_classes < 1) throw std::invalid_argument("num_classes: must be at least 1");
  if (pred.shape != target.shape)
    throw std::invalid_argument("pred and target: shapes differ");
  ConfusionFlags flags;
  if (pred.numel() == 0) return flags;
  const uint64_t limit = std::numeric_limits<uint32_t>::max();
  fold_every = fold_every == 0 ? limit : std::min(fold_every, limit);
  const Layout L = Layout::make(num_classes, has_ignore, ignore_index);
  visit_dtype(pred, "pred", [&](auto p) {
    visit_dtype(target, "target", [&](auto t) {
      flags = run<decltype(p), decltype(t)>(pred, target, L, out, std::max(1, num_threads),
                                            own_threads, fold_every);
    });
  });
  return flags;
}

}  // namespace fastseg::cpu
