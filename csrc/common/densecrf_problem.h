// What one dense-CRF call asks for, shared by the CPU and CUDA builds: the unary (probabilities or
// logits), the pairwise terms and where the answer goes. Pointers are host memory for the CPU build
// and device memory for the CUDA build; strides are in elements.
#pragma once
#include <cstdint>
#include <vector>

#include "common/macros.h"
#include "common/permutohedral.h"

namespace fastseg {
namespace crf {

enum ChannelType : int { kNoChannels = 0, kUInt8 = 1, kFloat32 = 2 };

// One Gaussian pairwise term exp(-|f_i - f_j|^2 / 2) with Potts weight `compat`, over the features
//   f = (x / sx, y / sy, channel_0 / divisor_0, ..., channel_{K-1} / divisor_{K-1})
// (positions only when use_xy). pydensecrf's Gaussian kernel is (use_xy, no channels); its
// bilateral kernel is (use_xy, the RGB image, srgb divisors); any other per-pixel features
// (depth, non-RGB images, precomputed embeddings) fit the same form.
struct Term {
  bool use_xy = true;
  float sx = 1.f, sy = 1.f;
  int channel_type = kNoChannels;
  const void* channels = nullptr;  // [B, H, W, K]
  int64_t cs[4] = {0, 0, 0, 0};
  int K = 0;
  float divisor[lattice::kMaxDim] = {};
  float compat = 0.f;

  FS_HOST_DEVICE int dim() const { return (use_xy ? 2 : 0) + K; }

  // The feature vector of pixel (y, x) of image b, computed as pydensecrf does (float division).
  FS_HOST_DEVICE void features(int64_t b, int64_t y, int64_t x, float* f) const {
    int k = 0;
    if (use_xy) {
      f[k++] = static_cast<float>(x) / sx;
      f[k++] = static_cast<float>(y) / sy;
    }
    const int64_t base = b * cs[0] + y * cs[1] + x * cs[2];
    for (int c = 0; c < K; ++c) {
      float v;
      if (channel_type == kUInt8) v = static_cast<float>(static_cast<const uint8_t*>(channels)[base + c * cs[3]]);
      else v = static_cast<const float*>(channels)[base + c * cs[3]];
      f[k++] = v / divisor[c];
    }
  }
};

struct Problem {
  const float* probs = nullptr;  // [B, C, H, W]
  int64_t ps[4] = {0, 0, 0, 0};
  int64_t B = 0, C = 0, H = 0, W = 0;
  bool logits = false;  // false: probabilities, unary = -log(clip(p, 1e-5, 1)) as unary_from_softmax
  std::vector<Term> terms;
  int n_iter = 5;
  float* out = nullptr;  // [B, C, H, W] refined probabilities (may be null when only labels are wanted)
  int64_t os[4] = {0, 0, 0, 0};
  uint8_t* labels = nullptr;  // [B, H, W] argmax (may be null)
  int64_t ls[3] = {0, 0, 0};
  int rounding = lattice::kHalfEven;
  bool atomic_splat = false;       // CPU only: splat by atomic scatter (the GPU's way), for the tests
  bool reference_lattice = false;  // CPU only: locate with the scalar lattice::locate (the GPU's), for the tests
};

}  // namespace crf
}  // namespace fastseg
