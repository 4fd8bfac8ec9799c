// Each op's binding file (bindings/<op>.cpp) registers itself here, so adding an op never touches
// module.cpp:
//   static fastseg::Registrar reg([](pybind11::module_& m) { m.def(...); });
#pragma once
#include <pybind11/pybind11.h>

#include <vector>

namespace fastseg {

using RegisterFn = void (*)(pybind11::module_&);

inline std::vector<RegisterFn>& registry() {
  static std::vector<RegisterFn> fns;
  return fns;
}

struct Registrar {
  explicit Registrar(RegisterFn fn) { registry().push_back(fn); }
};

}  // namespace fastseg
