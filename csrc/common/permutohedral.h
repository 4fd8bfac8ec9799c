// Permutohedral lattice math (Adams, Baek and Davis 2010) as used by the fully connected CRF of
// Kraehenbuehl and Koltun, written once for g++ (CPU build, tested) and nvcc (CUDA build).
//
// Everything here follows pydensecrf's lattice step by step: the same
// scale factors, the same float operation order when elevating (no fused multiply-add: a one-ulp
// change moves points that sit exactly on a rounding tie or a rank tie into another simplex), the
// same rounding of the remainder-0 point (half-to-even, pydensecrf's SSE path; or ties-down, its
// scalar path), the same ranks, barycentric weights, canonical simplex and blur neighbours.
// Vertex *numbering* is free (the blur is per vertex and the splat sums in pixel order), so the hash
// table may be filled concurrently: slots are claimed with an atomic compare-and-swap, the same
// code on the GPU (atomicCAS) and on the CPU (GCC's __atomic builtins, what std::atomic compiles to).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/macros.h"

#if defined(__CUDACC__)
#include <cuda/atomic>
#endif

namespace fastseg {
namespace lattice {

constexpr int kMaxDim = 16;  // feature channels per pairwise term (positions included)

enum Rounding : int { kHalfEven = 0, kTiesDown = 1 };

// ---------------------------------------------------------------------------------------------
// The lattice location must not be contracted into FMAs (nvcc and g++ -march=native both would): a
// one-ulp change moves points that sit exactly on a rounding or rank tie into another simplex. On
// the device the products use __fmul_rn; on the host an empty asm statement makes the rounded
// product a value the compiler cannot fuse into a following add (a per-function fp-contract=off
// would do too, but it keeps these functions from being inlined into their callers).
FS_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#elif defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  float r = a * b;
  asm("" : "+x"(r));  // r must be materialised in an SSE register: no fusion across this point
  return r;
#elif defined(__GNUC__) && defined(__aarch64__)
  float r = a * b;
  asm("" : "+w"(r));
  return r;
#else  // other compilers: build with -ffp-contract=off
  return a * b;
#endif
}
// Round to nearest, ties to even (SSE's cvtps2dq under the default MXCSR, which pydensecrf's SSE
// build uses), for |v| < 2^22: adding and removing 1.5 * 2^23 leaves the rounded value. (std::rint
// would do, but glibc's nearbyint is slow and rint may call out of line.)
FS_HOST_DEVICE inline float round_half_even(float v) {
#if defined(__CUDA_ARCH__)
  return rintf(v);
#else
  volatile float big = 12582912.0f;  // volatile: no compiler may fold (v + big) - big
  const float b = big;
  return (v + b) - b;
#endif
}

// scale_i = sqrt(2/3) (d+1) / sqrt((i+1)(i+2)), evaluated in pydensecrf's mixed precision.
inline void scale_factors(int d, float* scale) {
  const float inv_std_dev = static_cast<float>(std::sqrt(2.0 / 3.0) * (d + 1));
  for (int i = 0; i < d; ++i)
    scale[i] = static_cast<float>(1.0 / std::sqrt(static_cast<double>((i + 2) * (i + 1))) * inv_std_dev);
}

// The simplex enclosing one feature vector: the remainder-0 vertex rem0, the rank of every
// coordinate and the d+1 barycentric weights (bary[0..d]). Returns false when a coordinate is too
// large for the integer keys (features scaled far outside any sensible range).
// D > 0 fixes the dimension at compile time (unrolled loops); D = 0 reads it from d.
template <int D = 0>
FS_HOST_DEVICE inline bool locate(const float* f, const float* scale, int d_runtime, int rounding,
                                  int* rem0, int* rank, float* bary) {
  const int d = D > 0 ? D : d_runtime;
  float elevated[kMaxDim + 1];
  float rem[kMaxDim + 1];
  float rk[kMaxDim + 1];
  // Elevate: y = E f (p.5 of Adams et al.), from the last coordinate down, as pydensecrf does.
  float sm = 0.f;
  for (int j = d; j > 0; --j) {
    const float cf = mul_rn(f[j - 1], scale[j - 1]);
    elevated[j] = sm - mul_rn(static_cast<float>(j), cf);
    sm += cf;
  }
  elevated[0] = sm;
  // Nearest remainder-0 point: round y/(d+1) per coordinate.
  const float down = 1.0f / static_cast<float>(d + 1);
  const float up = static_cast<float>(d + 1);
  float sum = 0.f;
  for (int i = 0; i <= d; ++i) {
    if (!(fabsf(elevated[i]) < 4.0e6f)) return false;  // NaN, or too far out for exact rounding
    float v;
    if (rounding == kHalfEven) {
      v = round_half_even(mul_rn(down, elevated[i]));
      rem[i] = mul_rn(v, up);
      sum += v;
    } else {  // pydensecrf's scalar path: compare the distances to ceil and floor, ties go down
      const float q = mul_rn(down, elevated[i]);
      const float hi = mul_rn(ceilf(q), up), lo = mul_rn(floorf(q), up);
      rem[i] = (hi - elevated[i] < elevated[i] - lo) ? hi : lo;
      v = mul_rn(rem[i], down);
      sum += v;
    }
  }
  // Rank of each coordinate's residual (pairwise comparison, ties to the later coordinate).
  for (int i = 0; i <= d; ++i) rk[i] = 0.f;
  for (int i = 0; i < d; ++i) {
    const float di = elevated[i] - rem[i];
    for (int j = i + 1; j <= d; ++j) {  // branch-free: these comparisons are unpredictable
      const float c = di < elevated[j] - rem[j] ? 1.f : 0.f;
      rk[i] += c;
      rk[j] += 1.f - c;
    }
  }
  // Bring the point back onto the lattice plane (sum of rem0 must be 0): wrap ranks around.
  // (Branch-free: the wraps are unpredictable. Adding up - 0 or 0 - up is exactly adding or
  // subtracting up; adding 0 changes nothing that matters, a -0 remainder becoming +0.)
  for (int i = 0; i <= d; ++i) {
    rk[i] += sum;
    const float shift = (rk[i] < 0.f ? up : 0.f) - (rk[i] >= up ? up : 0.f);
    rk[i] += shift;
    rem[i] += shift;
  }
  // Barycentric coordinates (p.10 of Adams et al.).
  float b[kMaxDim + 2];
  for (int i = 0; i <= d + 1; ++i) b[i] = 0.f;
  for (int i = 0; i <= d; ++i) {
    const float v = mul_rn(elevated[i] - rem[i], down);
    const int p = d - static_cast<int>(rk[i]);
    b[p] += v;
    b[p + 1] -= v;
  }
  b[0] += 1.f + b[d + 1];
  for (int i = 0; i <= d; ++i) {
    rem0[i] = static_cast<int>(rem[i]);
    rank[i] = static_cast<int>(rk[i]);
    bary[i] = b[i];
  }
  return true;
}


// Key (first d coordinates) of vertex `remainder` of the simplex: rem0 + canonical[remainder][rank].
FS_HOST_DEVICE inline void vertex_key(const int* rem0, const int* rank, int d, int remainder, int* key) {
  for (int i = 0; i < d; ++i)
    key[i] = rem0[i] + (rank[i] <= d - remainder ? remainder : remainder - (d + 1));
}

// Key of the blur neighbour of `key` along axis j (0..d): -1 on every coordinate and +d on axis j
// (dir = -1 gives pydensecrf's n1), or the reverse (dir = +1, n2). Axis d touches no stored coordinate.
FS_HOST_DEVICE inline void neighbour_key(const int* key, int d, int j, int dir, int* out) {
  for (int k = 0; k < d; ++k) out[k] = key[k] + dir;
  if (j < d) out[j] = key[j] - dir * d;
}

// ---------------------------------------------------------------------------------------------
// Open-addressing hash table of lattice vertices (linear probing, power-of-two capacity, at most
// half full). A slot is one int, the vertex id (or kEmpty / kBusy); the keys are stored by id (d
// ints each). Compact slots keep a natural image's table in the L2 cache, the keys are needed anyway
// (for the blur-neighbour search and for rehashing into a bigger table: ids stay valid when the
// table grows). Ids are handed out densely (0, 1, ...) by an atomic counter when a key is first
// inserted.
constexpr int kEmpty = -1;
constexpr int kBusy = -2;

FS_HOST_DEVICE inline uint32_t hash_key(const int* key, int d) {
  uint64_t h = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < d; ++i) {
    h ^= static_cast<uint32_t>(key[i]);
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
  }
  h *= 0xC4CEB9FE1A85EC53ull;
  return static_cast<uint32_t>(h ^ (h >> 29));
}

// The slot protocol: the thread that claims a slot writes the key with plain stores, then publishes
// the id with a release store; a reader that sees the id (by an acquire load, or by an acquire CAS
// that fails because the slot is taken) is then guaranteed to see the key. On the GPU this is the
// PTX memory model's release / acquire at device scope (st.release.gpu, ld.acquire.gpu,
// atom.acq_rel.gpu.cas): a volatile load orders nothing, and without acquire a reader on another SM
// may compare against a key it has not yet seen and insert the same vertex twice. The key words
// themselves are read through L2 (ld.global.cg, keys_equal_published): the L1 of an SM is not
// coherent with the stores of other SMs.
FS_HOST_DEVICE inline int atomic_load(const int* p) {
#if defined(__CUDA_ARCH__)
  return cuda::atomic_ref<int, cuda::thread_scope_device>(*const_cast<int*>(p)).load(cuda::memory_order_acquire);
#else
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}
FS_HOST_DEVICE inline void atomic_store(int* p, int v) {
#if defined(__CUDA_ARCH__)
  cuda::atomic_ref<int, cuda::thread_scope_device>(*p).store(v, cuda::memory_order_release);
#else
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
#endif
}
// Returns the value seen before the swap (== expected when this thread won the slot).
FS_HOST_DEVICE inline int atomic_cas(int* p, int expected, int desired) {
#if defined(__CUDA_ARCH__)
  cuda::atomic_ref<int, cuda::thread_scope_device>(*p).compare_exchange_strong(
      expected, desired, cuda::memory_order_acq_rel, cuda::memory_order_acquire);
  return expected;
#else
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
  return expected;
#endif
}
FS_HOST_DEVICE inline int atomic_add(int* p, int v) {
#if defined(__CUDA_ARCH__)
  return atomicAdd(p, v);
#else
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}
FS_HOST_DEVICE inline void atomic_add(float* p, float v) {
#if defined(__CUDA_ARCH__)
  atomicAdd(p, v);
#else
  int* ip = reinterpret_cast<int*>(p);
  int cur = __atomic_load_n(ip, __ATOMIC_RELAXED);
  for (;;) {
    float f;
    std::memcpy(&f, &cur, sizeof f);
    f += v;
    int next;
    std::memcpy(&next, &f, sizeof next);
    if (__atomic_compare_exchange_n(ip, &cur, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return;
  }
#endif
}

struct HashTable {
  int* slots;     // capacity: vertex id or kEmpty / kBusy
  int* keys;      // limit * d: the key of each id
  int* count;     // ids handed out so far (may run past `limit` when an insert fails)
  uint32_t mask;  // capacity - 1
  int d;
  int limit;      // at most this many ids: an insert beyond fails (grow the table and retry)
};

FS_HOST_DEVICE inline bool keys_equal(const int* a, const int* b, int d) {
  for (int i = 0; i < d; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// keys_equal for a key another thread may have just published (stored, a table key): on the GPU its
// words are read through L2 (see the slot protocol above); on the CPU, caches are coherent.
FS_HOST_DEVICE inline bool keys_equal_published(const int* stored, const int* key, int d) {
#if defined(__CUDA_ARCH__)
  for (int i = 0; i < d; ++i)
    if (__ldcg(stored + i) != key[i]) return false;
  return true;
#else
  return keys_equal(stored, key, d);
#endif
}

// Id of `key` (whose hash_key is `hash`), inserting it when absent (with a new id, or with
// `fixed_id` when rehashing). -1 when the table has no id left: the caller grows it and inserts again.
FS_HOST_DEVICE inline int hash_insert_hashed(const HashTable& t, const int* key, uint32_t hash, int fixed_id = -1) {
  uint32_t h = hash & t.mask;
  for (;;) {
    int* slot = t.slots + h;
    int s = atomic_load(slot);
    if (s == kEmpty) {
      s = atomic_cas(slot, kEmpty, kBusy);
      if (s == kEmpty) {  // this thread owns the slot: write the key, then publish the id
        const int id = fixed_id >= 0 ? fixed_id : atomic_add(t.count, 1);
        if (id >= t.limit) {
          atomic_store(slot, kEmpty);
          return -1;
        }
        if (fixed_id < 0)
          for (int i = 0; i < t.d; ++i) t.keys[static_cast<int64_t>(id) * t.d + i] = key[i];
        atomic_store(slot, id);
        return id;
      }
    }
    while (s == kBusy) s = atomic_load(slot);  // another thread is writing this id's key
    if (s == kEmpty) continue;                 // its insert failed and released the slot: look again
    if (keys_equal_published(t.keys + static_cast<int64_t>(s) * t.d, key, t.d)) return s;
    h = (h + 1) & t.mask;
  }
}

FS_HOST_DEVICE inline int hash_insert(const HashTable& t, const int* key, int fixed_id = -1) {
  return hash_insert_hashed(t, key, hash_key(key, t.d), fixed_id);
}

// Id of `key` or -1 (read-only, once the table is complete).
FS_HOST_DEVICE inline int hash_find(const HashTable& t, const int* key) {
  uint32_t h = hash_key(key, t.d) & t.mask;
  for (;;) {
    const int s = t.slots[h];
    if (s == kEmpty) return -1;
    if (keys_equal(t.keys + static_cast<int64_t>(s) * t.d, key, t.d)) return s;
    h = (h + 1) & t.mask;
  }
}

// ---------------------------------------------------------------------------------------------
// Mean-field arithmetic shared by both builds.

// alpha = 1 / (1 + 2^-d): the lattice's magic scale so that K(f, f) ~ 1.
FS_HOST_DEVICE inline float slice_alpha(int d) { return 1.0f / (1.0f + powf(2.0f, -static_cast<float>(d))); }

FS_HOST_DEVICE inline float int_as_float(int i) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(i);
#else
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
#endif
}

// Round to the nearest integer (any tie rule) for |v| < 2^22, vectorisable.
FS_HOST_DEVICE inline float round_fast(float v) {
#if defined(__CUDA_ARCH__)
  return rintf(v);
#else
  return (v + 12582912.0f) - 12582912.0f;  // not folded: g++ keeps IEEE semantics without -ffast-math
#endif
}

FS_HOST_DEVICE inline int float_as_int(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(f);
#else
  int i;
  std::memcpy(&i, &f, sizeof i);
  return i;
#endif
}

// The polynomial cores of exp_approx and log_approx (Cephes' expf / logf coefficients), written
// once for float and for the CPU's 8-lane vectors (csrc/cpu/simd8.h), whose operators take float
// constants too: same coefficients, same operation order, bit-identical lanes. `T{} + c` is the
// constant c in either type (exactly, so compilers fold it).
// exp(r) for |r| <= ln(2) / 2.
template <class T>
FS_HOST_DEVICE inline T exp_poly(T r) {
  T y = T{} + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  return y * r * r + r + 1.0f;
}

// log((1 + m) * 2^e) for m in [sqrt(1/2) - 1, sqrt(2) - 1), e an integer-valued float.
template <class T>
FS_HOST_DEVICE inline T log_poly(T m, T e) {
  const T z = m * m;
  T y = T{} + 7.0376836292e-2f;
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
// exp(x) to about one ulp (Cephes' expf, as in Eigen, which pydensecrf uses) for x in [-80, 88];
// below -80 it returns e^-80 ~ 1.8e-35 (negligible next to the softmax's largest term, 1, and far
// from the denormals that would slow every later multiply). Straight-line code, so loops over labels
// vectorise: clamps are plain selects of values, never of arithmetic that g++ must assume can trap.
FS_HOST_DEVICE inline float exp_approx(float x) {
  float xc = x < -80.0f ? -80.0f : x;
  xc = xc > 88.0f ? 88.0f : xc;
  const float n = round_fast(xc * 1.44269504088896341f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  return exp_poly(r) * int_as_float((static_cast<int>(n) + 127) << 23);
}

// log(x) for positive normal x to about one ulp (Cephes' logf); straight-line integer bit work.
FS_HOST_DEVICE inline float log_approx(float x) {
  const int bits = float_as_int(x);
  float m = int_as_float((bits & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  const int small = -static_cast<int>(m < 0.707106781186547524f);  // all ones when m < sqrt(1/2)
  const float e = static_cast<float>(((bits >> 23) & 0xff) - 126 + small);
  m = m + int_as_float(float_as_int(m) & small) - 1.0f;  // 2m - 1 when small, else m - 1
  return log_poly(m, e);
}

}  // namespace lattice
}  // namespace fastseg
