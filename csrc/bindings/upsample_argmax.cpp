// Binding of the fused upsample + argmax CPU kernel (cpu/upsample_argmax.cpp).
#include <optional>

#include "bindings/registry.h"
#include "cpu/upsample_argmax.h"

namespace py = pybind11;

namespace {

void upsample_argmax(const fastseg::Buffer& logits, const fastseg::Buffer& labels,
                     const std::optional<fastseg::Buffer>& confidence,
                     const std::optional<fastseg::Buffer>& max_value, bool align_corners, int num_threads,
                     bool own_threads) {
  fastseg::cpu::upsample_argmax(logits, labels, confidence ? &*confidence : nullptr,
                                max_value ? &*max_value : nullptr, align_corners, num_threads, own_threads);
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
});

}  // namespace
