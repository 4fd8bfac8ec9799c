// The fastseg._C extension: torch-free kernels over raw buffers (see common/buffer.h).
#include <omp.h>

#include "registry.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastseg native kernels (C++/OpenMP; CUDA where compiled)";
#ifdef FASTSEG_WITH_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
  m.def("max_threads", [] { return omp_get_max_threads(); });
  for (auto fn : fastseg::registry()) fn(m);
}
