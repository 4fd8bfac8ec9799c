// Binding of the confusion matrix, CPU (cpu/confusion_matrix.cpp) and CUDA (cuda/confusion_matrix.cu);
// the Python side is fastseg/ops/confusion_matrix/, which validates the arguments and raises on the flags.
#include "bindings/registry.h"
#include "common/confusion_layout.h"
#include "cpu/confusion_matrix.h"
#ifdef FASTSEG_WITH_CUDA
#include "cuda/confusion_matrix.h"
#endif

namespace py = pybind11;

namespace {

// out: a zero-initialised contiguous int64 [C, C] buffer that receives the counts.
// Returns (bad_pred, bad_target): which input held a value outside [0, C) at a counted pixel.
// fold_every (tests only): fold the per-thread 32-bit counters after this many pixels.
// own_threads: run on fastseg's sleeping pool instead of OpenMP's (common/threads.h).
py::tuple confusion_matrix(const fastseg::Buffer& pred, const fastseg::Buffer& target, int64_t num_classes,
                           bool has_ignore, int64_t ignore_index, const fastseg::Buffer& out,
                           int num_threads, uint64_t fold_every, bool own_threads) {
  out.check_rank(2, "out");
  out.check_dtype(fastseg::DType::kInt64, "out");
  if (out.shape[0] != num_classes || out.shape[1] != num_classes || out.strides[0] != num_classes ||
      out.strides[1] != 1)
    throw std::invalid_argument("out: expected a contiguous [num_classes, num_classes] buffer");
  fastseg::cpu::ConfusionFlags flags;
  {
    py::gil_scoped_release release;
    flags = fastseg::cpu::confusion_matrix(pred, target, num_classes, has_ignore, ignore_index,
                                           out.data<int64_t>(), num_threads, own_threads, fold_every);
  }
  return py::make_tuple(flags.bad_pred, flags.bad_target);
}

// CUDA: pred and target are 1-D device buffers of one length; out int64 [C, C], flags int32 [2] and
// table int64 [(C + 2) * (C + 1)] contiguous device buffers, all zeroed by the caller (flags:
// bad_pred, bad_target). Queued on cuda_stream; the caller reads the flags when it needs them.
void confusion_matrix_cuda(const fastseg::Buffer& pred, const fastseg::Buffer& target, int64_t num_classes,
                           bool has_ignore, int64_t ignore_index, const fastseg::Buffer& out,
                           const fastseg::Buffer& flags, const fastseg::Buffer& table, std::uintptr_t cuda_stream) {
  pred.check_rank(1, "pred");
  target.check_rank(1, "target");
  if (pred.shape != target.shape) throw std::invalid_argument("pred and target: lengths differ");
  out.check_dtype(fastseg::DType::kInt64, "out");
  flags.check_dtype(fastseg::DType::kInt32, "flags");
  table.check_dtype(fastseg::DType::kInt64, "table");
  const auto layout = fastseg::ConfusionLayout::make(num_classes, has_ignore, ignore_index);
  if (out.numel() != num_classes * num_classes || flags.numel() != 2 || table.numel() != layout.plane)
    throw std::invalid_argument("out / flags / table: wrong sizes");
#ifdef FASTSEG_WITH_CUDA
  using fastseg::cuda::LabelType;
  auto map = [](const fastseg::Buffer& b, const char* name) {
    fastseg::cuda::LabelMap m{reinterpret_cast<const void*>(b.ptr), LabelType::kUInt8, b.strides[0]};
    switch (b.dtype) {
      case fastseg::DType::kUInt8: m.type = LabelType::kUInt8; break;
      case fastseg::DType::kInt8: m.type = LabelType::kInt8; break;
      case fastseg::DType::kInt16: m.type = LabelType::kInt16; break;
      case fastseg::DType::kInt32: m.type = LabelType::kInt32; break;
      case fastseg::DType::kInt64: m.type = LabelType::kInt64; break;
      default: b.unsupported_dtype(name);
    }
    return m;
  };
  fastseg::cuda::confusion_matrix(map(pred, "pred"), map(target, "target"), pred.shape[0], layout,
                                  table.data<int64_t>(), out.data<int64_t>(), flags.data<int32_t>(), cuda_stream);
#else
  throw std::invalid_argument("confusion_matrix_cuda: fastseg._C was built without CUDA");
#endif
}

fastseg::Registrar reg([](py::module_& m) {
  m.def("confusion_matrix", &confusion_matrix, py::arg("pred"), py::arg("target"), py::arg("num_classes"),
        py::arg("has_ignore"), py::arg("ignore_index"), py::arg("out"), py::arg("num_threads"),
        py::arg("fold_every") = 0, py::arg("own_threads") = false,
        "Adds the (target, pred) pair counts of two integer label maps into out (int64 [C, C]); "
        "returns (bad_pred, bad_target).");
  m.def("confusion_matrix_cuda", &confusion_matrix_cuda, py::arg("pred"), py::arg("target"),
        py::arg("num_classes"), py::arg("has_ignore"), py::arg("ignore_index"), py::arg("out"), py::arg("flags"),
        py::arg("table"), py::arg("cuda_stream"), py::call_guard<py::gil_scoped_release>(),
        "Adds the (target, pred) counts of two 1-D device label maps into out, queued on a CUDA stream.");
});

}  // namespace
