// Python binding of the fused upsample + argmax CPU kernel (see cpu/upsample_argmax.cpp).
#include <pybind11/pybind11.h>

#include <optional>

#include "common/buffer.h"
#include "cpu/upsample_argmax.h"
#include "registry.h"

namespace py = pybind11;

namespace {

void upsample_argmax_binding(const fastseg::Buffer& logits, const std::string& logits_dtype,
                             const fastseg::Buffer& labels, const std::string& labels_dtype,
                             const std::optional<fastseg::Buffer>& confidence,
                             const std::optional<fastseg::Buffer>& max_value, bool align_corners,
                             int num_threads, bool own_threads) {
  fastseg::cpu::upsample_argmax(logits, logits_dtype, labels, labels_dtype,
                                confidence ? &*confidence : nullptr,
                                max_value ? &*max_value : nullptr, align_corners, num_threads,
                                own_threads);
}

fastseg::Registrar reg([](py::module_& m) {
  m.def("upsample_argmax", &upsample_argmax_binding, py::arg("logits"), py::arg("logits_dtype"),
        py::arg("labels"), py::arg("labels_dtype"), py::arg("confidence"), py::arg("max_value"), py::arg("align_corners"),
        py::arg("num_threads"), py::arg("own_threads"), py::call_guard<py::gil_scoped_release>(),
        "Fused bilinear upsample + channel argmax (+ max softmax probability) of raw buffers.");
  m.def("upsample_argmax_workspace_bytes", &fastseg::cpu::upsample_argmax_workspace_bytes,
        py::arg("C"), py::arg("h"), py::arg("w"), py::arg("H"), py::arg("W"),
        py::arg("align_corners"), py::arg("num_threads"),
        "Scratch bytes (all threads) upsample_argmax allocates beyond its input and output.");
});

}  // namespace
