// Binding of the Winograd F(4x4, 3x3) / F(6x6, 3x3) transforms (cpu/winograd.h).
#include <optional>

#include "bindings/registry.h"
#include "cpu/winograd.h"

namespace py = pybind11;
namespace wino = fastseg::cpu::winograd;

namespace {

int64_t num_tiles(int64_t N, int64_t H, int64_t W, int64_t dilation, int m) {
  return static_cast<int64_t>(wino::plan(N, H, W, dilation, m).size());
}

void output_transform(const fastseg::Buffer& m, const fastseg::Buffer& out,
                      const std::optional<fastseg::Buffer>& bias, fastseg::Activation activation,
                      int64_t dilation, int tile, int64_t t0, int64_t t1, int num_threads,
                      bool own_threads) {
  if (bias && (bias->dim() != 1 || bias->shape[0] != out.shape.back() || bias->strides[0] != 1 ||
               bias->dtype != fastseg::DType::kFloat32))
    throw std::invalid_argument("winograd.output_transform: bias must be a contiguous [K] float32 tensor");
  wino::output_transform(m, out, bias ? bias->data<float>() : nullptr, activation, dilation, tile, t0,
                         t1, num_threads, own_threads);
}

fastseg::Registrar reg([](py::module_& m) {
  m.def("winograd_num_tiles", &num_tiles, py::arg("N"), py::arg("H"), py::arg("W"), py::arg("dilation"),
        py::arg("m"), "Number of m x m Winograd tiles (m = 4 or 6) of an [N, H, W] output at this dilation.");
  m.def("winograd_input_transform", &wino::input_transform, py::arg("x"), py::arg("v"), py::arg("dilation"),
        py::arg("m"), py::arg("t0"), py::arg("t1"), py::arg("num_threads"), py::arg("own_threads"), py::call_guard<py::gil_scoped_release>(),
        "NHWC float32 input -> [(m+2)^2, tiles, C] transform points of tiles [t0, t1).");
  m.def("winograd_output_transform", &output_transform, py::arg("m"), py::arg("out"), py::arg("bias"),
        py::arg("activation"), py::arg("dilation"), py::arg("tile"), py::arg("t0"), py::arg("t1"),
        py::arg("num_threads"), py::arg("own_threads"), py::call_guard<py::gil_scoped_release>(),
        "[(tile+2)^2, tiles, K] products -> NHWC float32 output of tiles [t0, t1), + bias, activation "
        "(Activation.none, relu or relu6).");
});

}  // namespace
