// fastseg._cpu: which instruction-set extensions this CPU has, asked of the CPU itself (cpuid on
// x86, the kernel's hwcaps on aarch64). Built without -march flags so that it runs on any CPU of its
// architecture: fastseg._native asks it, before loading fastseg._C, whether the CPU can run the
// instructions _C was compiled with (a _C tuned for AVX-512 dies of SIGILL on an AVX2-only CPU).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace py = pybind11;

namespace {

// Feature names are the lower-case names GCC's predefined macros use (__AVX512VNNI__ -> avx512vnni,
// __ARM_FEATURE_DOTPROD -> dotprod); fastseg/_target.py lists the ones a build can assume, and a test
// checks that this table knows each of them (`known`).
#define FS_X86_FEATURES(X)                                                                            \
  X("sse3") X("ssse3") X("sse4.1") X("sse4.2") X("popcnt") X("avx") X("avx2") X("fma") X("bmi")        \
  X("bmi2") X("f16c") X("avx512f") X("avx512bw") X("avx512cd") X("avx512dq") X("avx512vl")             \
  X("avx512vnni") X("avx512bf16") X("avx512ifma") X("avx512vbmi") X("avx512vbmi2") X("avx512bitalg")  \
  X("avx512vpopcntdq") X("avx512fp16") X("amx-tile") X("amx-bf16") X("amx-int8")
const char* const kArmFeatures[] = {"neon", "fp", "fp16", "dotprod", "crypto", "aes", "sha2", "crc32",
                                    "atomics", "rcpc", "sve", "bf16", "i8mm"};

std::vector<std::string> known() {
  std::vector<std::string> names;
#if defined(__x86_64__) || defined(__i386__)
#define FS_NAME(feature) names.push_back(feature);
  FS_X86_FEATURES(FS_NAME)
#undef FS_NAME
#elif defined(__aarch64__)
  for (const char* name : kArmFeatures) names.push_back(name);
#endif
  return names;
}

bool has(const std::string& name) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#define FS_TEST(feature) \
  if (name == feature) return __builtin_cpu_supports(feature);
  FS_X86_FEATURES(FS_TEST)
#undef FS_TEST
  return false;  // a name this table does not know: assume the CPU lacks it
#elif defined(__aarch64__) && defined(__linux__)
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  if (name == "neon" || name == "fp") return (hw & HWCAP_ASIMD) != 0;
  if (name == "fp16") return (hw & HWCAP_FPHP) && (hw & HWCAP_ASIMDHP);
  if (name == "dotprod") return (hw & HWCAP_ASIMDDP) != 0;
  if (name == "crypto" || name == "aes") return (hw & HWCAP_AES) != 0;
  if (name == "sha2") return (hw & HWCAP_SHA2) != 0;
  if (name == "crc32") return (hw & HWCAP_CRC32) != 0;
  if (name == "atomics") return (hw & HWCAP_ATOMICS) != 0;
  if (name == "rcpc") return (hw & HWCAP_LRCPC) != 0;
  if (name == "sve") return (hw & HWCAP_SVE) != 0;
#ifdef HWCAP2_BF16
  if (name == "bf16") return (hw2 & HWCAP2_BF16) != 0;
#endif
#ifdef HWCAP2_I8MM
  if (name == "i8mm") return (hw2 & HWCAP2_I8MM) != 0;
#endif
  (void)hw2;
  return false;
#else
  (void)name;
  return false;
#endif
}

std::vector<std::string> missing(const std::vector<std::string>& features) {
  std::vector<std::string> out;
  for (const auto& f : features)
    if (!has(f)) out.push_back(f);
  return out;
}

}  // namespace

#ifndef FASTSEG_C_MARCH
#define FASTSEG_C_MARCH ""
#define FASTSEG_C_MACHINE ""
#define FASTSEG_C_FEATURES ""
#endif

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "Instruction-set extensions of this CPU (cpuid / hwcaps), for fastseg._native's check";
  // What the _C of the same build was compiled for (setup.py asks the compiler).
  m.attr("c_march") = FASTSEG_C_MARCH;
  m.attr("c_machine") = FASTSEG_C_MACHINE;
  m.attr("c_features") = FASTSEG_C_FEATURES;
  m.def("missing", &missing, "The names among `features` this CPU lacks", py::arg("features"));
  m.def("has", &has, "Whether this CPU has the named extension", py::arg("name"));
  m.def("known", &known, "The extension names `has` can test on this architecture");
}
