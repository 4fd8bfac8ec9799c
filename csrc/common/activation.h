// Activation codes of the fused kernels: the one list of them. Exported to Python as
// fastseg._C.Activation; fastseg/ops/activation.py maps each activation name onto a member, and the
// Triton epilogue (fastseg/ops/atrous_conv/triton_kernel.py) is specialised on the same integer values.
// A kernel that fuses only some of them says which (the Winograd output transform: none, relu, relu6).
#pragma once

namespace fastseg {

enum class Activation : int { kNone = 0, kRelu = 1, kRelu6 = 2, kHardswish = 3 };

}  // namespace fastseg
