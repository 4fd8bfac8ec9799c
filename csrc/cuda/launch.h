// What every CUDA launch file shares: error checks and the 1-D grid of a grid-stride loop.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastseg::cuda {

constexpr int kThreads = 256;

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// Blocks of `threads` for n items, one per thread: at most 2^20 blocks (CUDA allows 2^31 - 1 on axis 0), the
// kernels looping over the rest with a grid stride.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t b = (std::max<int64_t>(n, 1) + threads - 1) / threads;
  return static_cast<unsigned>(std::min<int64_t>(b, int64_t{1} << 20));
}

}  // namespace fastseg::cuda
