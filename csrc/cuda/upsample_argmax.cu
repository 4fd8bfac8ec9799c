// Fused bilinear upsample + argmax on a CUDA device: one thread per run of output pixels that share
// their four taps, running common/upsample_argmax_run.h (bilinear.h's taps and lerps, shared with the
// CPU kernel). The logits are read where they lie (any strides); nothing of full resolution but the
// labels (and the optional confidence / maximum) is written.
#include "cuda/launch.h"
#include "cuda/upsample_argmax.h"

namespace fastseg::cuda {
namespace {

// A thread holds a run's 32 running maxima and labels (about 170 registers, 230 with the confidence):
// blocks of 128 let an SM keep 12 warps resident (3 blocks) where blocks of 256 would keep 8.
constexpr int kRunThreads = 128;

template <typename T, int MY, int MX, bool CONF>
__global__ void upsample_argmax_kernel(UpsampleArgmaxArgs a) {
  const int64_t total = a.N * a.ry.units * a.rx.units;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total; i += stride)
    upsample_argmax_run<T, MY, MX, CONF>(a, i);
}

}  // namespace

void upsample_argmax(UpsampleArgmaxArgs args, std::uintptr_t stream) {
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  visit_upsample_argmax_kernels(args, [&](auto t, auto shape) {
    constexpr int MY = decltype(shape)::kY, MX = decltype(shape)::kX;
    upsample_argmax_kernel<decltype(t), MY, MX, decltype(shape)::kConf>
        <<<grid_for(args.N * args.ry.units * args.rx.units, kRunThreads), kRunThreads, 0, st>>>(args);
  });
  check(cudaGetLastError(), "upsample_argmax (CUDA)");
}

}  // namespace fastseg::cuda
