// Winograd F(4x4, 3x3) and F(6x6, 3x3) transforms for stride-1 3x3 convolutions on NHWC float32 (CPU).
//
// A dilated 3x3 convolution (dilation d, padding d) is an ordinary 3x3 convolution on each of the
// d*d interleaved sub-grids {(y, x) : y = ry mod d, x = rx mod d}; so a "tile" here is an m x m
// lattice (m = 4 or 6) of output pixels spaced d apart, read from the (m+2) x (m+2) lattice of input
// pixels around it (zeros outside the image are the convolution's padding). Per tile and channel:
//   input   V = B^T d B   ((m+2)^2 transform points: 36 for m = 4, 64 for m = 6)
//   GEMM    M[p] = V[p] @ U[p] for each point p (tiles x C times C x K; done by the caller's BLAS)
//   output  Y = A^T M A   (points -> m x m outputs), + bias, activation
// with U = G g G^T the transformed weights (computed once, in Python, in float64). The points are
// 0, +-1, +-2, inf for m = 4 and 0, +-1, +-1/2, +-2, inf for m = 6 (Lavin & Gray, "Fast Algorithms
// for Convolutional Neural Networks"). F(6x6) multiplies less per output but rounds a little more.
#pragma once
#include <cstdint>
#include <vector>

#include "common/activation.h"
#include "common/buffer.h"

namespace fastseg::cpu::winograd {

// Top-left output pixel of a tile; the tile covers (y + i*d, x + j*d), i, j < m (clipped to the image).
struct Tile {
  int32_t n, y, x;
};

// Every m x m tile of an [N, H, W] output at dilation d, in a fixed order (image, residue, row, column).
std::vector<Tile> plan(int64_t N, int64_t H, int64_t W, int64_t dilation, int m);

// x: [N, H, W, C] (channel stride 1); v: [(m+2)^2, T, C] (channel stride 1) receives tiles [t0, t1).
void input_transform(const Buffer& x, const Buffer& v, int64_t dilation, int m, int64_t t0, int64_t t1,
                     int num_threads, bool own_threads);

// m: [(tile+2)^2, T, K] (channel stride 1), tiles [t0, t1); out: [N, H, W, K] (channel stride 1);
// bias: [K] or nullptr; activation: Activation::kNone, kRelu or kRelu6 (the others are not fused here).
// Both run on num_threads threads: OpenMP's, or fastseg's sleeping pool with own_threads (common/threads.h).
void output_transform(const Buffer& m, const Buffer& out, const float* bias, Activation activation,
                      int64_t dilation, int tile, int64_t t0, int64_t t1, int num_threads,
                      bool own_threads);

}  // namespace fastseg::cpu::winograd
