// Fused bilinear upsample + argmax on a CUDA device: one thread per output pixel, running the
// per-pixel code of common/upsample_argmax_pixel.h (bilinear.h's taps and lerps, shared with the CPU
// kernel). The logits are read where they lie (any strides); nothing of full resolution but the
// labels (and the optional confidence / maximum) is written.
#include "cuda/launch.h"
#include "cuda/upsample_argmax.h"

namespace fastseg::cuda {
namespace {

template <typename T, typename L>
__global__ void upsample_argmax_kernel(UpsampleArgmaxArgs a) {
  const int64_t total = a.N * a.H * a.W;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total; i += stride)
    upsample_argmax_pixel<T, L>(a, i);
}

}  // namespace

void upsample_argmax(const UpsampleArgmaxArgs& args, std::uintptr_t stream) {
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  visit_upsample_argmax_types(args, [&](auto t, auto l) {
    upsample_argmax_kernel<decltype(t), decltype(l)><<<grid_for(args.N * args.H * args.W), kThreads, 0, st>>>(args);
  });
  check(cudaGetLastError(), "upsample_argmax (CUDA)");
}

}  // namespace fastseg::cuda
