// Binding of the CPU confusion matrix (cpu/confusion_matrix.cpp); the Python side is
// fastseg/ops/confusion_matrix/, which validates the arguments and raises on the flags.
#include "bindings/registry.h"
#include "cpu/confusion_matrix.h"

namespace py = pybind11;

namespace {

// out: a zero-initialised contiguous int64 [C, C] buffer that receives the counts.
// Returns (bad_pred, bad_target): which input held a value outside [0, C) at a counted pixel.
// fold_every (tests only): fold the per-thread 32-bit counters after this many pixels.
py::tuple confusion_matrix(const fastseg::Buffer& pred, const fastseg::Buffer& target, int64_t num_classes,
                           bool has_ignore, int64_t ignore_index, const fastseg::Buffer& out,
                           int num_threads, uint64_t fold_every) {
  out.check_rank(2, "out");
  out.check_dtype(fastseg::DType::kInt64, "out");
  if (out.shape[0] != num_classes || out.shape[1] != num_classes || out.strides[0] != num_classes ||
      out.strides[1] != 1)
    throw std::invalid_argument("out: expected a contiguous [num_classes, num_classes] buffer");
  fastseg::cpu::ConfusionFlags flags;
  {
    py::gil_scoped_release release;
    flags = fastseg::cpu::confusion_matrix(pred, target, num_classes, has_ignore, ignore_index,
                                           out.data<int64_t>(), num_threads, fold_every);
  }
  return py::make_tuple(flags.bad_pred, flags.bad_target);
}

fastseg::Registrar reg([](py::module_& m) {
  m.def("confusion_matrix", &confusion_matrix, py::arg("pred"), py::arg("target"), py::arg("num_classes"),
        py::arg("has_ignore"), py::arg("ignore_index"), py::arg("out"), py::arg("num_threads"),
        py::arg("fold_every") = 0,
        "Adds the (target, pred) pair counts of two integer label maps into out (int64 [C, C]); "
        "returns (bad_pred, bad_target).");
});

}  // namespace
