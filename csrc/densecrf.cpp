// Python binding of the dense CRF (fastseg.crf holds the user-facing wrapper and the checks).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "common/buffer.h"
#include "cpu/densecrf.h"
#include "registry.h"

namespace py = pybind11;

namespace fastseg {
namespace crf {
namespace {

// (use_xy, sx, sy, channel_type, channels buffer or None, divisors, compat)
using TermSpec = std::tuple<bool, float, float, int, std::optional<Buffer>, std::vector<float>, float>;

Problem make_problem(const Buffer& probs, bool logits, const std::vector<TermSpec>& specs, int n_iter,
                     const std::optional<Buffer>& out, const std::optional<Buffer>& labels, int rounding,
                     bool atomic_splat, bool reference_lattice) {
  probs.check_rank(4, "probs");
  Problem P;
  P.probs = probs.data<const float>();
  for (int i = 0; i < 4; ++i) P.ps[i] = probs.strides[i];
  P.B = probs.shape[0];
  P.C = probs.shape[1];
  P.H = probs.shape[2];
  P.W = probs.shape[3];
  if (P.C < 1 || P.C > 256) throw std::invalid_argument("probs: the number of labels must be in [1, 256]");
  P.logits = logits;
  P.n_iter = n_iter;
  if (n_iter < 0) throw std::invalid_argument("n_iter must be >= 0");
  if (rounding != lattice::kHalfEven && rounding != lattice::kTiesDown)
    throw std::invalid_argument("rounding must be 0 (half-even) or 1 (ties-down)");
  P.rounding = rounding;
  P.atomic_splat = atomic_splat;
  P.reference_lattice = reference_lattice;
  for (const auto& s : specs) {
    Term t;
    t.use_xy = std::get<0>(s);
    t.sx = std::get<1>(s);
    t.sy = std::get<2>(s);
    t.channel_type = std::get<3>(s);
    const auto& ch = std::get<4>(s);
    const auto& div = std::get<5>(s);
    t.compat = std::get<6>(s);
    if (t.channel_type != kNoChannels) {
      if (!ch) throw std::invalid_argument("pairwise term: channel buffer missing");
      ch->check_rank(4, "pairwise features");
      if (ch->shape[0] != P.B || ch->shape[1] != P.H || ch->shape[2] != P.W)
        throw std::invalid_argument("pairwise features: batch and size must match probs");
      t.channels = reinterpret_cast<const void*>(ch->ptr);
      for (int i = 0; i < 4; ++i) t.cs[i] = ch->strides[i];
      t.K = static_cast<int>(ch->shape[3]);
      if (static_cast<int>(div.size()) != t.K)
        throw std::invalid_argument("pairwise term: one divisor per feature channel is needed");
      for (int c = 0; c < t.K; ++c) t.divisor[c] = div[c];
    }
    if (t.dim() < 1 || t.dim() > lattice::kMaxDim)
      throw std::invalid_argument("pairwise term: between 1 and " + std::to_string(lattice::kMaxDim) +
                                  " feature dimensions (positions included) are supported");
    P.terms.push_back(t);
  }
  if (out) {
    out->check_rank(4, "out");
    P.out = out->data<float>();
    for (int i = 0; i < 4; ++i) P.os[i] = out->strides[i];
  }
  if (labels) {
    labels->check_rank(3, "labels");
    P.labels = labels->data<uint8_t>();
    for (int i = 0; i < 3; ++i) P.ls[i] = labels->strides[i];
  }
  return P;
}

void densecrf_cpu_py(const Buffer& probs, bool logits, const std::vector<TermSpec>& terms, int n_iter,
                     const std::optional<Buffer>& out, const std::optional<Buffer>& labels, int num_threads,
                     int rounding, bool atomic_splat, bool reference_lattice) {
  densecrf_cpu(make_problem(probs, logits, terms, n_iter, out, labels, rounding, atomic_splat, reference_lattice),
               num_threads);
}

#ifdef FASTSEG_WITH_CUDA
void densecrf_cuda_py(const Buffer& probs, bool logits, const std::vector<TermSpec>& terms, int n_iter,
                      const std::optional<Buffer>& out, const std::optional<Buffer>& labels,
                      std::uintptr_t stream, int rounding) {
  densecrf_cuda(make_problem(probs, logits, terms, n_iter, out, labels, rounding, false, false), stream);
}
#endif

int64_t densecrf_bytes_py(int64_t H, int64_t W, int64_t C, const std::vector<int>& dims) {
  return densecrf_cpu_bytes(H, W, C, dims.data(), static_cast<int>(dims.size()));
}

Registrar reg([](py::module_& m) {
  m.def("densecrf", &densecrf_cpu_py, "Dense CRF mean field on the CPU (see fastseg.crf)", py::arg("probs"),
        py::arg("logits"), py::arg("terms"), py::arg("n_iter"), py::arg("out"), py::arg("labels"),
        py::arg("num_threads"), py::arg("rounding") = 0, py::arg("atomic_splat") = false,
        py::arg("reference_lattice") = false,
        py::call_guard<py::gil_scoped_release>());
#ifdef FASTSEG_WITH_CUDA
  m.def("densecrf_cuda", &densecrf_cuda_py, "Dense CRF mean field on a CUDA device (device pointers)",
        py::arg("probs"), py::arg("logits"), py::arg("terms"), py::arg("n_iter"), py::arg("out"),
        py::arg("labels"), py::arg("stream"), py::arg("rounding") = 0, py::call_guard<py::gil_scoped_release>());
#endif
  m.def("densecrf_bytes", &densecrf_bytes_py, "Worst-case bytes the CPU dense CRF allocates for one image",
        py::arg("H"), py::arg("W"), py::arg("C"), py::arg("term_dims"));
});

}  // namespace
}  // namespace crf
}  // namespace fastseg
