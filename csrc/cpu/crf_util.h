// Small pieces shared by the CPU dense CRF's lattice build and mean field: uninitialised aligned
// arrays, the stage profiler and the fixed split of an image's pixels into chunks.
#pragma once
#include <sys/mman.h>
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>

namespace fastseg {
namespace crf {

// FASTSEG_CRF_PROFILE=1 prints the process CPU time of each stage to stderr (development aid; CPU
// time because the shared machines make wall time too noisy to profile with).
inline double cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}
struct StageTimer {
  bool on = std::getenv("FASTSEG_CRF_PROFILE") != nullptr;
  double t = on ? cpu_ms() : 0.0;
  void operator()(const char* stage) {
    if (!on) return;
    const double now = cpu_ms();
    std::fprintf(stderr, "  crf %-24s %8.2f ms\n", stage, now - t);
    t = now;
  }
};

// Fresh memory from the kernel costs a page fault per 4 KiB page on first touch: about 8 ms for the
// 25 MiB one 480x360 image needs, on these virtual machines. Large blocks are therefore 2 MiB
// aligned and marked for transparent huge pages (one fault per 2 MiB; about 2 ms for the same).
inline void* allocate_block(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  if (bytes < kHuge) return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  bytes = (bytes + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, bytes);
#ifdef MADV_HUGEPAGE
  if (p) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without THP nothing changes
#endif
  return p;
}

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
      p.reset(static_cast<T*>(allocate_block(static_cast<size_t>(size) * sizeof(T))));
      if (!p) throw std::bad_alloc();
      n = size;
    }
  }
  void release() { p.reset(); n = 0; }
  T* data() const { return p.get(); }
  T& operator[](int64_t i) const { return p[i]; }
};

// [b, e): part t of T of n items.
inline void chunk(int64_t n, int t, int T, int64_t& b, int64_t& e) {
  b = n * t / T;
  e = n * (t + 1) / T;
}

// Pixels are handled in blocks of 8 (one vector lane each); an image's blocks are split into this
// many fixed chunks (by pixel count only, never by thread count). Each chunk builds its own part of
// a lattice and splats into its own vertex buffer, and the parts are combined in chunk order, so
// results are bit-identical whatever the number of threads.
constexpr int kBlock = 8;
inline int pixel_chunks(int64_t N) { return N >= (int64_t{1} << 15) ? 2 : 1; }
inline int64_t blocks_of(int64_t N) { return (N + kBlock - 1) / kBlock; }
// Pixels [p0, p1) of chunk c (block-aligned).
inline void chunk_pixels(int64_t N, int c, int chunks, int64_t& p0, int64_t& p1) {
  int64_t b0, b1;
  chunk(blocks_of(N), c, chunks, b0, b1);
  p0 = b0 * kBlock;
  p1 = b1 * kBlock < N ? b1 * kBlock : N;
}

inline uint64_t pow2_at_least(uint64_t v) {
  uint64_t p = 64;
  while (p < v) p <<= 1;
  return p;
}

}  // namespace crf
}  // namespace fastseg
