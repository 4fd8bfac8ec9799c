// Binding of the fused upsample + argmax: the CPU kernel (cpu/upsample_argmax.cpp), the CUDA kernel
// (cuda/upsample_argmax.cu) and, for the tests, the CUDA kernel's per-thread code run on the CPU.
#include <optional>
#include <stdexcept>

#include "bindings/registry.h"
#include "common/buffer.h"
#include "common/upsample_argmax_run.h"
#include "cpu/upsample_argmax.h"
#ifdef FASTSEG_WITH_CUDA
#include "cuda/upsample_argmax.h"
#endif

namespace py = pybind11;

namespace {

using fastseg::Buffer;
using fastseg::DType;

void upsample_argmax(const Buffer& logits, const Buffer& labels, const std::optional<Buffer>& confidence,
                     const std::optional<Buffer>& max_value, bool align_corners, int num_threads,
                     bool own_threads) {
  fastseg::cpu::upsample_argmax(logits, labels, confidence ? &*confidence : nullptr,
                                max_value ? &*max_value : nullptr, align_corners, num_threads, own_threads);
}

// The CUDA kernel's arguments, checked: every buffer's rank, dtype and shape.
fastseg::UpsampleArgmaxArgs kernel_args(const Buffer& logits, const Buffer& labels,
                                       const std::optional<Buffer>& confidence,
                                       const std::optional<Buffer>& max_value, bool align_corners) {
  logits.check_rank(4, "logits");
  labels.check_rank(3, "labels");
  fastseg::UpsampleArgmaxArgs a;
  a.logits = reinterpret_cast<const void*>(logits.ptr);
  switch (logits.dtype) {
    case DType::kFloat32: a.logit_type = fastseg::LogitType::kFloat32; break;
    case DType::kFloat16: a.logit_type = fastseg::LogitType::kFloat16; break;
    case DType::kBFloat16: a.logit_type = fastseg::LogitType::kBFloat16; break;
    default: logits.unsupported_dtype("logits");
  }
  switch (labels.dtype) {
    case DType::kUInt8: a.label_bytes = 1; break;
    case DType::kInt16: a.label_bytes = 2; break;
    case DType::kInt32: a.label_bytes = 4; break;
    case DType::kInt64: a.label_bytes = 8; break;
    default: labels.unsupported_dtype("labels");
  }
  a.N = logits.shape[0];
  a.C = logits.shape[1];
  a.h = logits.shape[2];
  a.w = logits.shape[3];
  a.H = labels.shape[1];
  a.W = labels.shape[2];
  if (labels.shape[0] != a.N) throw std::invalid_argument("labels: batch differs from logits");
  if (a.C < 1 || a.h < 1 || a.w < 1 || a.H < 1 || a.W < 1) throw std::invalid_argument("logits / labels: empty");
  for (int i = 0; i < 4; ++i) a.xs[i] = logits.strides[i];
  a.align_corners = align_corners;
  a.labels = reinterpret_cast<void*>(labels.ptr);
  for (int i = 0; i < 3; ++i) a.ls[i] = labels.strides[i];
  auto output = [&](const std::optional<Buffer>& b, const char* name, float*& ptr, int64_t* strides) {
    if (!b) return;
    b->check_rank(3, name);
    b->check_dtype(DType::kFloat32, name);
    if (b->shape != labels.shape) throw std::invalid_argument(std::string(name) + ": shape differs from labels");
    ptr = b->data<float>();
    for (int i = 0; i < 3; ++i) strides[i] = b->strides[i];
  };
  output(confidence, "confidence", a.confidence, a.cs);
  output(max_value, "max_value", a.max_value, a.ms);
  return a;
}

void upsample_argmax_threadwise(const Buffer& logits, const Buffer& labels, const std::optional<Buffer>& confidence,
                                const std::optional<Buffer>& max_value, bool align_corners) {
  auto a = kernel_args(logits, labels, confidence, max_value, align_corners);
  fastseg::visit_upsample_argmax_kernels(a, [&](auto t, auto shape) {
    constexpr int MY = decltype(shape)::kY, MX = decltype(shape)::kX;
    for (int64_t i = 0; i < a.N * a.ry.units * a.rx.units; ++i)
      fastseg::upsample_argmax_run<decltype(t), MY, MX, decltype(shape)::kConf>(a, i);
  });
}

void upsample_argmax_cuda(const Buffer& logits, const Buffer& labels, const std::optional<Buffer>& confidence,
                          const std::optional<Buffer>& max_value, bool align_corners, std::uintptr_t cuda_stream) {
#ifdef FASTSEG_WITH_CUDA
  fastseg::cuda::upsample_argmax(kernel_args(logits, labels, confidence, max_value, align_corners), cuda_stream);
#else
  throw std::invalid_argument("upsample_argmax_cuda: fastseg._C was built without CUDA");
#endif
}

fastseg::Registrar reg([](py::module_& m) {
  m.def("upsample_argmax", &upsample_argmax, py::arg("logits"), py::arg("labels"), py::arg("confidence"),
        py::arg("max_value"), py::arg("align_corners"), py::arg("num_threads"), py::arg("own_threads"),
        py::call_guard<py::gil_scoped_release>(),
        "Fused bilinear upsample + channel argmax (+ max softmax probability) of raw buffers.");
  m.def("upsample_argmax_workspace_bytes", &fastseg::cpu::upsample_argmax_workspace_bytes,
        py::arg("C"), py::arg("h"), py::arg("w"), py::arg("H"), py::arg("W"),
        py::arg("align_corners"), py::arg("num_threads"),
        "Scratch bytes (all threads) upsample_argmax allocates beyond its input and output.");
  m.def("upsample_argmax_cuda", &upsample_argmax_cuda, py::arg("logits"), py::arg("labels"),
        py::arg("confidence"), py::arg("max_value"), py::arg("align_corners"), py::arg("cuda_stream"),
        py::call_guard<py::gil_scoped_release>(),
        "upsample_argmax of device buffers, queued on a CUDA stream (a cudaStream_t as an integer).");
  m.def("upsample_argmax_threadwise", &upsample_argmax_threadwise, py::arg("logits"), py::arg("labels"),
        py::arg("confidence"), py::arg("max_value"), py::arg("align_corners"),
        py::call_guard<py::gil_scoped_release>(),
        "The CUDA kernel's per-thread code run on the CPU, one run of pixels after another (tests).");
});

}  // namespace
