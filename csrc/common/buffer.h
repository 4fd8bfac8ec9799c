// Raw strided buffers handed over from Python as (address, shape, strides-in-elements, dtype).
// This keeps fastseg._C free of the torch C++ ABI: one build serves every torch version. The element
// type travels inside the descriptor (a DType, exported to Python as fastseg._C.DType), so a kernel
// picks its instantiation from the buffer itself and no dtype name crosses the boundary as a string.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastseg {

// Element types a kernel may be handed; the names are torch's (fastseg._native maps torch dtypes
// onto these by name).
enum class DType : int { kUInt8, kInt8, kInt16, kInt32, kInt64, kFloat16, kBFloat16, kFloat32 };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::kUInt8: return "uint8";
    case DType::kInt8: return "int8";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat32: return "float32";
  }
  return "unknown";
}

struct Buffer {
  std::uintptr_t ptr = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements, not bytes
  DType dtype = DType::kFloat32;

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
  void check_dtype(DType expected, const char* name) const {
    if (dtype != expected)
      throw std::invalid_argument(std::string(name) + ": expected " + dtype_name(expected) + ", got " +
                                  dtype_name(dtype));
  }
  [[noreturn]] void unsupported_dtype(const char* name) const {
    throw std::invalid_argument(std::string(name) + ": unsupported dtype " + dtype_name(dtype));
  }
};

}  // namespace fastseg

namespace pybind11::detail {
// A Buffer arrives from Python as the tuple (address, shape, strides, DType).
template <>
struct type_caster<fastseg::Buffer> {
  PYBIND11_TYPE_CASTER(fastseg::Buffer, const_name("Buffer"));
  bool load(handle src, bool) {
    if (!isinstance<tuple>(src)) return false;
    auto t = reinterpret_borrow<tuple>(src);
    if (t.size() != 4) return false;
    value.ptr = t[0].cast<std::uintptr_t>();
    value.shape = t[1].cast<std::vector<int64_t>>();
    value.strides = t[2].cast<std::vector<int64_t>>();
    value.dtype = t[3].cast<fastseg::DType>();
    return value.shape.size() == value.strides.size();
  }
  static handle cast(const fastseg::Buffer&, return_value_policy, handle) {
    throw cast_error("fastseg::Buffer is input-only");
  }
};
}  // namespace pybind11::detail
