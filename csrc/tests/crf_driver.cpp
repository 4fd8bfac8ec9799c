// A native driver for the dense CRF, without Python: the CPU kernels built for another instruction
// set (aarch64 under qemu-aarch64, an AVX2-only x86 under qemu-x86_64 -cpu Haswell) run one problem
// here and their answer is compared with the extension's on this machine (tests/test_native_targets.py).
//
//   crf_driver IN OUT
// IN  (little-endian): int32 C, H, W, n_iter; float32 gauss_sxy, gauss_compat, bilateral_sxy,
//     bilateral_srgb, bilateral_compat; float32 probs [C, H, W]; uint8 rgb [H, W, 3].
// OUT: float32 refined probabilities [C, H, W], then uint8 labels [H, W].
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <vector>

#include "cpu/densecrf.h"

namespace {

template <typename T>
bool read(std::ifstream& in, T* data, size_t n) {
  return static_cast<bool>(in.read(reinterpret_cast<char*>(data), static_cast<std::streamsize>(n * sizeof(T))));
}

}  // namespace

int main(int argc, char** argv) {
  using namespace fastseg::crf;
  if (argc != 3) {
    std::cerr << "usage: crf_driver IN OUT\n";
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  int32_t dims[4];
  float params[5];
  if (!read(in, dims, 4) || !read(in, params, 5)) {
    std::cerr << "crf_driver: cannot read the header of " << argv[1] << "\n";
    return 2;
  }
  const int64_t C = dims[0], H = dims[1], W = dims[2];
  std::vector<float> probs(C * H * W), out(C * H * W);
  std::vector<uint8_t> rgb(H * W * 3), labels(H * W);
  if (!read(in, probs.data(), probs.size()) || !read(in, rgb.data(), rgb.size())) {
    std::cerr << "crf_driver: " << argv[1] << " is shorter than its header says\n";
    return 2;
  }

  Problem P;
  P.probs = probs.data();
  P.B = 1, P.C = C, P.H = H, P.W = W;
  P.ps[0] = C * H * W, P.ps[1] = H * W, P.ps[2] = W, P.ps[3] = 1;
  P.n_iter = dims[3];
  Term gauss;  // pydensecrf's addPairwiseGaussian: positions only
  gauss.sx = gauss.sy = params[0];
  gauss.compat = params[1];
  Term bilateral;  // addPairwiseBilateral: positions and RGB
  bilateral.sx = bilateral.sy = params[2];
  bilateral.channel_type = kUInt8;
  bilateral.channels = rgb.data();
  bilateral.cs[0] = H * W * 3, bilateral.cs[1] = W * 3, bilateral.cs[2] = 3, bilateral.cs[3] = 1;
  bilateral.K = 3;
  for (int c = 0; c < 3; ++c) bilateral.divisor[c] = params[3];
  bilateral.compat = params[4];
  P.terms = {gauss, bilateral};
  P.out = out.data();
  P.os[0] = C * H * W, P.os[1] = H * W, P.os[2] = W, P.os[3] = 1;
  P.labels = labels.data();
  P.ls[0] = H * W, P.ls[1] = W, P.ls[2] = 1;
  try {
    densecrf_cpu(P, 1);
  } catch (const std::exception& e) {
    std::cerr << "crf_driver: " << e.what() << "\n";
    return 1;
  }
  std::ofstream o(argv[2], std::ios::binary);
  o.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size() * sizeof(float)));
  o.write(reinterpret_cast<const char*>(labels.data()), static_cast<std::streamsize>(labels.size()));
  return o ? 0 : 1;
}
