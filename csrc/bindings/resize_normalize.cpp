// Binding of the fused pixel-format conversion + antialiased resize + normalisation (cpu/resize_normalize.h).
#include <pybind11/stl.h>

#include "bindings/registry.h"
#include "cpu/resize_normalize.h"

namespace py = pybind11;

namespace {

fastseg::Registrar reg([](py::module_& m) {
  m.def("resize_normalize", &fastseg::cpu::resize_normalize, py::arg("images"), py::arg("format"),
        py::arg("out"), py::arg("scale"), py::arg("shift"), py::arg("yuv"), py::arg("num_threads"),
        py::arg("own_threads"), py::call_guard<py::gil_scoped_release>(),
        "uint8 frames (RGB / BGR [N,3,H,W], NV12 [N,H*3/2,W], YUYV [N,H,W,2]) -> float32 [N,3,h,w]: "
        "antialiased bilinear resize, then * scale[c] - shift[c].");
});

}  // namespace
