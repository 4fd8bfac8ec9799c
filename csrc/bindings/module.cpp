// The fastseg._C extension: torch-free kernels over raw buffers (see common/buffer.h).
//
// Layout: bindings/<op>.cpp turns Python arguments into an op's C++ call and registers itself
// (bindings/registry.h); cpu/<op>.{h,cpp} and cuda/<op>.{h,cu} hold the kernels; common/ holds what
// both builds share (the math written once for g++ and nvcc, the buffer descriptor, the enums).
// The enums below are the single definition of their codes: Python reads them from here.
#include <omp.h>

#include "bindings/registry.h"
#include "common/activation.h"
#include "common/buffer.h"
#include "common/permutohedral.h"
#include "common/threads.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastseg native kernels (C++/OpenMP; CUDA where compiled)";
#ifdef FASTSEG_WITH_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
  m.def("max_threads", [] { return omp_get_max_threads(); });
  m.def("threads_started", [] { return fastseg::threads_started().load(); },
        "Threads started for kernels run outside OpenMP (own_threads) since the process began.");
  py::enum_<fastseg::DType>(m, "DType", "Element type carried by a buffer descriptor (torch's names).")
      .value("uint8", fastseg::DType::kUInt8)
      .value("int8", fastseg::DType::kInt8)
      .value("int16", fastseg::DType::kInt16)
      .value("int32", fastseg::DType::kInt32)
      .value("int64", fastseg::DType::kInt64)
      .value("float16", fastseg::DType::kFloat16)
      .value("bfloat16", fastseg::DType::kBFloat16)
      .value("float32", fastseg::DType::kFloat32);
  py::enum_<fastseg::Activation>(m, "Activation", "Activation codes of the fused kernels (C++ and Triton).")
      .value("none", fastseg::Activation::kNone)
      .value("relu", fastseg::Activation::kRelu)
      .value("relu6", fastseg::Activation::kRelu6)
      .value("hardswish", fastseg::Activation::kHardswish);
  py::enum_<fastseg::lattice::Rounding>(m, "Rounding", "Remainder-0 rounding of the CRF's lattice.")
      .value("half_even", fastseg::lattice::kHalfEven)
      .value("ties_down", fastseg::lattice::kTiesDown);
  for (auto fn : fastseg::registry()) fn(m);
}
