// Confusion matrix on a CUDA device. Every block counts its pixels into a private copy of the
// extended table (common/confusion_layout.h, shared with the CPU kernel) in shared memory, then adds
// it to one table in global memory; a second kernel folds that table into the [C, C] counts and the
// out-of-range flags. Tables too large for shared memory are counted in global memory directly.
#include "cuda/confusion_matrix.h"
#include "cuda/launch.h"

namespace fastseg::cuda {
namespace {

// Per-block 32-bit counters cannot wrap: a launch covers at most 2^31 pixels.
constexpr int64_t kPixelsPerLaunch = int64_t{1} << 31;
constexpr int64_t kSharedBytes = 48 * 1024;  // available to every block without opting in

__device__ inline int64_t load_label(const LabelMap& m, int64_t i) {
  const int64_t j = i * m.stride;
  switch (m.type) {  // the same for every thread: no divergence
    case LabelType::kUInt8: return static_cast<const uint8_t*>(m.ptr)[j];
    case LabelType::kInt8: return static_cast<const int8_t*>(m.ptr)[j];
    case LabelType::kInt16: return static_cast<const int16_t*>(m.ptr)[j];
    case LabelType::kInt32: return static_cast<const int32_t*>(m.ptr)[j];
    default: return static_cast<const int64_t*>(m.ptr)[j];
  }
}

__device__ inline void add64(int64_t* p, uint64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

template <bool Shared>
__global__ void count_kernel(LabelMap pred, LabelMap target, int64_t begin, int64_t end, ConfusionLayout L,
                             int64_t* table) {
  extern __shared__ uint32_t local[];
  if (Shared) {
    for (int64_t k = threadIdx.x; k < L.plane; k += blockDim.x) local[k] = 0;
    __syncthreads();
  }
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = begin + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < end; i += stride) {
    const int64_t k = L.row(load_label(target, i)) + L.col(load_label(pred, i));
    if (Shared) atomicAdd(local + k, 1u);
    else add64(table + k, 1);
  }
  if (Shared) {
    __syncthreads();
    for (int64_t k = threadIdx.x; k < L.plane; k += blockDim.x)
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

}  // namespace

void confusion_matrix(const LabelMap& pred, const LabelMap& target, int64_t n, const ConfusionLayout& layout,
                      int64_t* table, int64_t* out, int32_t* flags, std::uintptr_t stream) {
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  const int64_t shared = layout.plane * static_cast<int64_t>(sizeof(uint32_t));
  for (int64_t begin = 0; begin < n; begin += kPixelsPerLaunch) {
    const int64_t end = std::min(n, begin + kPixelsPerLaunch);
    // Enough blocks to fill a large GPU, each then counting many pixels into its shared table.
    const unsigned blocks = std::min<unsigned>(grid_for((end - begin + 15) / 16), 4096u);
    if (shared <= kSharedBytes)
      count_kernel<true><<<blocks, kThreads, static_cast<size_t>(shared), st>>>(pred, target, begin, end, layout,
                                                                                table);
    else
      count_kernel<false><<<blocks, kThreads, 0, st>>>(pred, target, begin, end, layout, table);
  }
  fold_kernel<<<grid_for(layout.plane), kThreads, 0, st>>>(table, layout, out, flags);
  check(cudaGetLastError(), "confusion_matrix (CUDA)");
}

}  // namespace fastseg::cuda
