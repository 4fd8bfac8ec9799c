"""The CPU a build of `fastseg._C` is for, and whether this CPU can run it.

A `_C` compiled with -march=native uses every instruction-set extension of the machine that built
it; loaded on a CPU without one of them (an AVX-512 build on an AVX2-only machine, a build copied
between machines, a CMake tree reused after a change of CPU) it dies of SIGILL, with no Python
error. So the build records what it assumes and the import checks it first:

- setup.py asks the compiler which extensions its flags enable (`compiler_features`), compiles that
  list into `fastseg._cpu`, records it in its CMake tree, and rebuilds the tree from scratch when
  the recorded target differs from the new one (`build_tree_is_stale`).
- `fastseg._native` asks `fastseg._cpu` (a tiny module compiled without -march flags, so it runs
  everywhere) which of them this CPU lacks (`missing_features`) before it loads `_C`.

Standard library only: setup.py loads this file by path before anything is built.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

TARGET_FILE = "_C.target.json"

# Extensions a kernel may be compiled for, by the name GCC's predefined macro gives them
# (__AVX512VNNI__ -> avx512vnni). fastseg._cpu can test each of these on the running CPU.
X86_FEATURES = ("sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "fma", "bmi", "bmi2", "f16c",
                "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx512vnni", "avx512bf16",
                "avx512ifma", "avx512vbmi", "avx512vbmi2", "avx512bitalg", "avx512vpopcntdq", "avx512fp16",
                "amx-tile", "amx-bf16", "amx-int8")
ARM_MACROS = {"__ARM_NEON": "neon", "__ARM_FEATURE_DOTPROD": "dotprod",
              "__ARM_FEATURE_FP16_VECTOR_ARITHMETIC": "fp16", "__ARM_FEATURE_SVE": "sve",
              "__ARM_FEATURE_BF16_VECTOR_ARITHMETIC": "bf16", "__ARM_FEATURE_MATMUL_INT8": "i8mm",
              "__ARM_FEATURE_ATOMICS": "atomics", "__ARM_FEATURE_CRC32": "crc32", "__ARM_FEATURE_AES": "aes",
              "__ARM_FEATURE_SHA2": "sha2"}


def features_from_macros(macros: str) -> list[str]:
    """The extensions named by a compiler's `-dM -E` output."""
    defined = set(re.findall(r"^#define (\w+)", macros, flags=re.M))
    found = [name for name in X86_FEATURES
             if "__" + name.upper().replace(".", "_").replace("-", "_") + "__" in defined]
    found += [name for macro, name in ARM_MACROS.items() if macro in defined]
    return found


def compiler_features(compiler: str, flags: list[str]) -> list[str]:
    """The extensions `compiler flags` compiles for (its predefined macros)."""
    out = subprocess.run([compiler, *flags, "-dM", "-E", "-x", "c++", "-"], input="", capture_output=True,
                         text=True, check=True).stdout
    return features_from_macros(out)


def write_target(path: Path, target: dict) -> None:
    path.write_text(json.dumps(target, indent=1, sort_keys=True) + "\n")


def read_target(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def build_tree_is_stale(build_dir: Path, target: dict) -> bool:
    """A CMake tree built for another target: its objects carry the same flags (-march=native) but
    were compiled for another CPU, so nothing would be rebuilt without this check."""
    recorded = read_target(build_dir / TARGET_FILE)
    return recorded is not None and recorded != target


def built_target(cpu) -> dict:
    """The target the _C beside `cpu` (fastseg._cpu) was built for."""
    return {"march": cpu.c_march, "machine": cpu.c_machine,
            "features": [f for f in cpu.c_features.split(",") if f]}


def missing_features(target: dict | None, cpu) -> list[str]:
    """The extensions `target` assumes that this CPU lacks (`cpu` is fastseg._cpu)."""
    if not target:
        return []
    return list(cpu.missing(list(target.get("features", []))))


def refusal(target: dict, missing: list[str]) -> str:
    return (f"fastseg._C was built for another CPU: it uses {', '.join(missing)}, which this CPU lacks "
            f"(built with -march={target.get('march', '?')} on {target.get('machine', '?')}). Rebuild it on "
            "this machine (`make build`, or `pip install --no-build-isolation -e .`), or build a portable "
            "extension that runs on any CPU of its kind with FASTSEG_NATIVE_ARCH=off.")
