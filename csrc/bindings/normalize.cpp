// Binding of the uint8 -> float32 image normalisation (cpu/normalize.h).
#include <pybind11/stl.h>

#include "bindings/registry.h"
#include "cpu/normalize.h"

namespace py = pybind11;

namespace {

fastseg::Registrar reg([](py::module_& m) {
  m.def("normalize_image", &fastseg::cpu::normalize_image, py::arg("images"), py::arg("out"),
        py::arg("scale"), py::arg("shift"), py::arg("num_threads"), py::arg("own_threads"),
        py::call_guard<py::gil_scoped_release>(),
        "uint8 [N,C,H,W] -> float32 [N,C,H,W] (any strides): images * scale[c] - shift[c].");
});

}  // namespace
