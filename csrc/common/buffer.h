// Raw strided buffers handed over from Python as (address, shape, strides-in-elements).
// This keeps fastseg._C free of the torch C++ ABI: one build serves every torch version.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastseg {

struct Buffer {
  std::uintptr_t ptr = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements, not bytes

  template <typename T>
  T* data() const { return reinterpret_cast<T*>(ptr); }
  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  int64_t numel() const {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
  void check_rank(int64_t rank, const char* name) const {
    if (dim() != rank || static_cast<int64_t>(strides.size()) != rank)
      throw std::invalid_argument(std::string(name) + ": expected rank " + std::to_string(rank));
  }
};

}  // namespace fastseg

namespace pybind11::detail {
// A Buffer arrives from Python as the tuple (address, shape, strides).
template <>
struct type_caster<fastseg::Buffer> {
  PYBIND11_TYPE_CASTER(fastseg::Buffer, const_name("Buffer"));
  bool load(handle src, bool) {
    if (!isinstance<tuple>(src)) return false;
    auto t = reinterpret_borrow<tuple>(src);
    if (t.size() != 3) return false;
    value.ptr = t[0].cast<std::uintptr_t>();
    value.shape = t[1].cast<std::vector<int64_t>>();
    value.strides = t[2].cast<std::vector<int64_t>>();
    return value.shape.size() == value.strides.size();
  }
  static handle cast(const fastseg::Buffer&, return_value_policy, handle) {
    throw cast_error("fastseg::Buffer is input-only");
  }
};
}  // namespace pybind11::detail
