// Confusion matrix on a CUDA device, in one pass over the pixels. Every block counts its pixels into
// a private copy of the extended table (common/confusion_layout.h, shared with the CPU kernel) in
// shared memory, then adds it to one table in global memory; a second kernel folds that table into
// the [C, C] counts and the out-of-range flags. A table larger than the device lets a block have
// (above about 238 classes on an H100, 200 on an A100 or Orin) is counted in global memory directly.
//
// Atomics: atomicAdd compiles to PTX atom / red without a .sem qualifier, i.e. relaxed, with no
// fence: the counts order nothing and are read only after the kernel.
// Integer widths: per pixel, labels of at most 32 bits and table offsets are int32 (a table in shared
// memory holds far fewer than 2^31 counters); 64-bit labels are checked in int64 so that a wide
// invalid value cannot wrap into the range. The pixel index is 32-bit unsigned within a launch of
// at most 2^31 pixels (the host moves the maps' pointers to each launch's first pixel), so
// i + grid stride cannot wrap; the element offset i * stride is int64.
#include <type_traits>

#include "cuda/confusion_matrix.h"
#include "cuda/launch.h"

namespace fastseg::cuda {
namespace {

// Per-block 32-bit counters cannot wrap: a launch covers at most 2^31 pixels.
constexpr int64_t kPixelsPerLaunch = int64_t{1} << 31;
constexpr int64_t kSharedBytes = 48 * 1024;  // available to every block without opting in

// A map whose element type is known at compile time (T), or read through its LabelType (Mixed).
struct Mixed {};

template <typename T, bool Contig>
__device__ inline auto load_label(const LabelMap& m, uint32_t i) {
  const int64_t j = Contig ? int64_t{i} : static_cast<int64_t>(i) * m.stride;
  if constexpr (!std::is_same_v<T, Mixed>) {
    return static_cast<const T*>(m.ptr)[j];
  } else {
    switch (m.type) {  // the same for every thread: no divergence
      case LabelType::kUInt8: return static_cast<int64_t>(static_cast<const uint8_t*>(m.ptr)[j]);
      case LabelType::kInt8: return static_cast<int64_t>(static_cast<const int8_t*>(m.ptr)[j]);
      case LabelType::kInt16: return static_cast<int64_t>(static_cast<const int16_t*>(m.ptr)[j]);
      case LabelType::kInt32: return static_cast<int64_t>(static_cast<const int32_t*>(m.ptr)[j]);
      default: return static_cast<const int64_t*>(m.ptr)[j];
    }
  }
}

__device__ inline void add64(int64_t* p, uint64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

// Table offset of one pixel: int32 arithmetic for labels of at most 32 bits (Narrow), int64 else.
template <typename T, bool Contig, typename I>
__device__ inline I offset(const ConfusionLayout& L, const LabelMap& pred, const LabelMap& target, uint32_t i) {
  return L.row<I>(static_cast<I>(load_label<T, Contig>(target, i))) +
         L.col<I>(static_cast<I>(load_label<T, Contig>(pred, i)));
}

template <typename T>
constexpr bool kNarrow = !std::is_same_v<T, Mixed> && sizeof(T) <= 4;
template <typename T>
constexpr bool kByte = !std::is_same_v<T, Mixed> && sizeof(T) == 1;

// Contig: both maps have stride 1 and start 4-byte aligned (what the Python side hands over, unless
// a view cannot be flattened or starts inside a word).
template <typename T, bool Shared, bool Contig>
__global__ void count_kernel(LabelMap pred, LabelMap target, uint32_t n, ConfusionLayout L, int64_t* table) {
  using I = std::conditional_t<kNarrow<T> && Shared, int32_t, int64_t>;
  extern __shared__ uint32_t local[];
  if (Shared) {
    for (int32_t k = threadIdx.x; k < L.plane; k += blockDim.x) local[k] = 0;
    __syncthreads();
  }
  const auto add = [&](I k) {
    if (Shared) atomicAdd(local + k, 1u);
    else add64(table + k, 1);
  };
  const uint32_t stride = gridDim.x * blockDim.x;
  uint32_t first = blockIdx.x * blockDim.x + threadIdx.x;
  if constexpr (Contig && kByte<T>) {
    // Byte labels four at a time: one 32-bit load per map (Contig: both maps 4-byte aligned).
    const auto* p4 = static_cast<const uint32_t*>(pred.ptr);
    const auto* t4 = static_cast<const uint32_t*>(target.ptr);
    for (uint32_t q = first; q < n / 4; q += stride) {
      const uint32_t wp = p4[q], wt = t4[q];
#pragma unroll
      for (int b = 0; b < 32; b += 8)
        add(L.row<I>(static_cast<I>(static_cast<T>(wt >> b))) + L.col<I>(static_cast<I>(static_cast<T>(wp >> b))));
    }
    first += n / 4 * 4;  // the last n % 4 pixels, one each for the first threads
  }
  for (uint32_t i = first; i < n; i += stride) add(offset<T, Contig, I>(L, pred, target, i));
  if (Shared) {
    __syncthreads();
    for (int32_t k = threadIdx.x; k < L.plane; k += blockDim.x)
      if (local[k]) add64(table + k, local[k]);
  }
}

__global__ void fold_kernel(const int64_t* table, ConfusionLayout L, int64_t* out, int32_t* flags) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < L.plane; k += stride) {
    const int64_t n = table[k];
    if (n == 0) continue;
    const int64_t r = k / L.W, c = k % L.W;
    switch (L.fold(r, c)) {
      case ConfusionLayout::kCount: out[r * L.C + c] += n; break;  // one thread per cell: no race
      case ConfusionLayout::kBadPred: flags[0] = 1; break;
      case ConfusionLayout::kBadTarget: flags[1] = 1; break;
      case ConfusionLayout::kDrop: break;
    }
  }
}

// Bytes of shared memory a block may use on the current device (opting in above 48 KB).
int64_t shared_limit() {
  int device = 0, optin = 0;
  check(cudaGetDevice(&device), "confusion_matrix (CUDA): cudaGetDevice");
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
        "confusion_matrix (CUDA): cudaDeviceGetAttribute");
  return std::max<int64_t>(optin, kSharedBytes);
}

template <typename T, bool Contig>
void count(const LabelMap& pred, const LabelMap& target, int64_t n, const ConfusionLayout& layout, int64_t* table,
           cudaStream_t st) {
  const int64_t shared = layout.plane * static_cast<int64_t>(sizeof(uint32_t));
  const bool in_shared = shared <= shared_limit();
  if (in_shared && shared > kSharedBytes)
    check(cudaFuncSetAttribute(count_kernel<T, true, Contig>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(shared)),
          "confusion_matrix (CUDA): shared memory");
  const auto at = [](const LabelMap& m, int64_t begin) {  // the map from its pixel `begin` on
    LabelMap moved = m;
    moved.ptr = static_cast<const char*>(m.ptr) + begin * m.stride * int64_t{label_bytes(m.type)};
    return moved;
  };
  for (int64_t begin = 0; begin < n; begin += kPixelsPerLaunch) {
    const auto pixels = static_cast<uint32_t>(std::min(n - begin, kPixelsPerLaunch));
    // Enough blocks to fill a large GPU, each then counting many pixels into its shared table.
    const unsigned blocks = std::min<unsigned>(grid_for((pixels + 15) / 16), 4096u);
    const LabelMap p = at(pred, begin), t = at(target, begin);
    if (in_shared)
      count_kernel<T, true, Contig><<<blocks, kThreads, static_cast<size_t>(shared), st>>>(p, t, pixels, layout, table);
    else
      count_kernel<T, false, Contig><<<blocks, kThreads, 0, st>>>(p, t, pixels, layout, table);
  }
}

template <typename T>
void count(const LabelMap& pred, const LabelMap& target, int64_t n, const ConfusionLayout& layout, int64_t* table,
           cudaStream_t st) {
  const auto aligned = [](const LabelMap& m) { return reinterpret_cast<std::uintptr_t>(m.ptr) % 4 == 0; };
  if (pred.stride == 1 && target.stride == 1 && aligned(pred) && aligned(target))
    count<T, true>(pred, target, n, layout, table, st);
  else count<T, false>(pred, target, n, layout, table, st);
}

}  // namespace

void confusion_matrix(const LabelMap& pred, const LabelMap& target, int64_t n, const ConfusionLayout& layout,
                      int64_t* table, int64_t* out, int32_t* flags, std::uintptr_t stream) {
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  if (pred.type != target.type) {
    count<Mixed>(pred, target, n, layout, table, st);
  } else {
    switch (pred.type) {  // both maps of one type: its loads and arithmetic compiled in
      case LabelType::kUInt8: count<uint8_t>(pred, target, n, layout, table, st); break;
      case LabelType::kInt8: count<int8_t>(pred, target, n, layout, table, st); break;
      case LabelType::kInt16: count<int16_t>(pred, target, n, layout, table, st); break;
      case LabelType::kInt32: count<int32_t>(pred, target, n, layout, table, st); break;
      default: count<int64_t>(pred, target, n, layout, table, st); break;
    }
  }
  fold_kernel<<<grid_for(layout.plane), kThreads, 0, st>>>(table, layout, out, flags);
  check(cudaGetLastError(), "confusion_matrix (CUDA)");
}

}  // namespace fastseg::cuda
