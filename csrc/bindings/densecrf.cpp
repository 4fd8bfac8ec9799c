// Binding of the dense CRF: one entry point that runs the CPU build (cpu/densecrf.h) or, given a CUDA
// stream, the CUDA build (cuda/densecrf.h). fastseg.crf holds the user-facing wrapper and the checks.
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <functional>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/registry.h"
#include "common/buffer.h"
#include "cpu/densecrf.h"
#ifdef FASTSEG_WITH_CUDA
#include "cuda/densecrf.h"
#endif

namespace py = pybind11;

namespace fastseg {
namespace crf {
namespace {

// One pairwise term as Python hands it over (fastseg._C.CrfTerm, fields by name): positions over
// (sx, sy) when use_xy, then the feature channels [B, H, W, K] (uint8 or float32, which the buffer's
// dtype says) each over its divisor, with Potts weight `compat`.
struct TermSpec {
  bool use_xy = true;
  float sx = 1.f, sy = 1.f;
  std::optional<Buffer> features;
  std::vector<float> divisors;
  float compat = 0.f;
};

Term make_term(const TermSpec& s, const Problem& P) {
  Term t;
  t.use_xy = s.use_xy;
  t.sx = s.sx;
  t.sy = s.sy;
  t.compat = s.compat;
  if (s.features) {
    const Buffer& ch = *s.features;
    ch.check_rank(4, "pairwise features");
    if (ch.dtype == DType::kUInt8) t.channel_type = kUInt8;
    else if (ch.dtype == DType::kFloat32) t.channel_type = kFloat32;
    else ch.unsupported_dtype("pairwise features (uint8 or float32)");
    if (ch.shape[0] != P.B || ch.shape[1] != P.H || ch.shape[2] != P.W)
      throw std::invalid_argument("pairwise features: batch and size must match probs");
    t.channels = reinterpret_cast<const void*>(ch.ptr);
    for (int i = 0; i < 4; ++i) t.cs[i] = ch.strides[i];
    t.K = static_cast<int>(ch.shape[3]);
    if (t.K > lattice::kMaxDim || static_cast<int>(s.divisors.size()) != t.K)
      throw std::invalid_argument("pairwise term: one divisor per feature channel is needed");
    for (int c = 0; c < t.K; ++c) t.divisor[c] = s.divisors[c];
  }
  if (t.dim() < 1 || t.dim() > lattice::kMaxDim)
    throw std::invalid_argument("pairwise term: between 1 and " + std::to_string(lattice::kMaxDim) +
                                " feature dimensions (positions included) are supported");
  return t;
}

Problem make_problem(const Buffer& probs, bool logits, const std::vector<TermSpec>& specs, int n_iter,
                     const std::optional<Buffer>& out, const std::optional<Buffer>& labels,
                     lattice::Rounding rounding, bool atomic_splat, bool reference_lattice) {
  probs.check_rank(4, "probs");
  probs.check_dtype(DType::kFloat32, "probs");
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
  P.rounding = rounding;
  P.atomic_splat = atomic_splat;
  P.reference_lattice = reference_lattice;
  for (const auto& s : specs) P.terms.push_back(make_term(s, P));
  if (out) {
    out->check_rank(4, "out");
    out->check_dtype(DType::kFloat32, "out");
    P.out = out->data<float>();
    for (int i = 0; i < 4; ++i) P.os[i] = out->strides[i];
  }
  if (labels) {
    labels->check_rank(3, "labels");
    labels->check_dtype(DType::kUInt8, "labels");
    P.labels = labels->data<uint8_t>();
    for (int i = 0; i < 3; ++i) P.ls[i] = labels->strides[i];
  }
  return P;
}

// cuda_stream: None runs on the CPU (host pointers) with num_threads; a cudaStream_t (as an integer)
// runs the CUDA build on that stream (device pointers), its workspace taken through device_allocate
// (bytes -> address) and given back through device_release (cuda/workspace.h; fastseg.crf passes
// torch's caching allocator). atomic_splat and reference_lattice run the CUDA build's splat and
// lattice location on the CPU, for the tests.
void densecrf(const Buffer& probs, bool logits, const std::vector<TermSpec>& terms, int n_iter,
              const std::optional<Buffer>& out, const std::optional<Buffer>& labels, lattice::Rounding rounding,
              int num_threads, std::optional<std::uintptr_t> cuda_stream, bool atomic_splat,
              bool reference_lattice, const std::optional<std::function<std::uintptr_t(std::size_t)>>& device_allocate,
              const std::optional<std::function<void(std::uintptr_t)>>& device_release) {
  if (cuda_stream) {
#ifdef FASTSEG_WITH_CUDA
    if (!device_allocate || !device_release)
      throw std::invalid_argument("densecrf: a CUDA stream needs device_allocate and device_release");
    const DeviceAllocator memory{*device_allocate, *device_release};
    densecrf_cuda(make_problem(probs, logits, terms, n_iter, out, labels, rounding, false, false), *cuda_stream,
                  memory);
    return;
#else
    throw std::invalid_argument("densecrf: fastseg._C was built without CUDA");
#endif
  }
  densecrf_cpu(make_problem(probs, logits, terms, n_iter, out, labels, rounding, atomic_splat, reference_lattice),
               num_threads);
}

int64_t densecrf_bytes(int64_t H, int64_t W, int64_t C, const std::vector<int>& dims) {
  return densecrf_cpu_bytes(H, W, C, dims.data(), static_cast<int>(dims.size()));
}

Registrar reg([](py::module_& m) {
  py::class_<TermSpec>(m, "CrfTerm", "One Gaussian pairwise term of the dense CRF (see fastseg.crf).")
      .def(py::init([](bool use_xy, float sx, float sy, std::optional<Buffer> features, std::vector<float> divisors,
                       float compat) {
             return TermSpec{use_xy, sx, sy, std::move(features), std::move(divisors), compat};
           }),
           py::kw_only(), py::arg("use_xy"), py::arg("sx") = 1.f, py::arg("sy") = 1.f,
           py::arg("features") = py::none(), py::arg("divisors") = std::vector<float>{}, py::arg("compat"))
      .def_readonly("use_xy", &TermSpec::use_xy)
      .def_readonly("sx", &TermSpec::sx)
      .def_readonly("sy", &TermSpec::sy)
      .def_readonly("divisors", &TermSpec::divisors)
      .def_readonly("compat", &TermSpec::compat)
      .def_property_readonly("has_features", [](const TermSpec& t) { return t.features.has_value(); });
  m.def("densecrf", &densecrf, "Dense CRF mean field on the CPU, or on a CUDA stream (see fastseg.crf)",
        py::arg("probs"), py::arg("logits"), py::arg("terms"), py::arg("n_iter"), py::arg("out"),
        py::arg("labels"), py::arg("rounding"), py::arg("num_threads") = 1, py::arg("cuda_stream") = py::none(),
        py::arg("atomic_splat") = false, py::arg("reference_lattice") = false,
        py::arg("device_allocate") = py::none(), py::arg("device_release") = py::none(),
        py::call_guard<py::gil_scoped_release>());
  m.def("densecrf_bytes", &densecrf_bytes, "Worst-case bytes the CPU dense CRF allocates for one image",
        py::arg("H"), py::arg("W"), py::arg("C"), py::arg("term_dims"));
});

}  // namespace
}  // namespace crf
}  // namespace fastseg
