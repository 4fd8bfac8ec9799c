"""The native code on CPUs other than this one: an aarch64 build (Jetson, Raspberry Pi) run under
qemu-aarch64, a portable x86-64-v2 build run under `qemu-x86_64 -cpu Haswell` (AVX2, no AVX-512),
and the check that keeps a _C built for this CPU from being loaded on a CPU that lacks its
instructions (fastseg/_target.py).

The CRF runs through csrc/tests/crf_driver.cpp (no Python on the emulated side) and its answer is
compared with the extension's here, to the tolerance fastseg's CRF keeps against pydensecrf.
Needs Debian's g++-aarch64-linux-gnu and qemu-user (CI installs them); elsewhere the tests skip.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastseg
from fastseg import _native, _target
from fastseg.crf import DenseCRF

REPO = Path(__file__).resolve().parents[1]
CRF_SOURCES = ["csrc/tests/crf_driver.cpp", "csrc/cpu/densecrf.cpp", "csrc/cpu/crf_lattice.cpp",
               "csrc/cpu/crf_meanfield.cpp"]
HASWELL = {"sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "fma", "bmi", "bmi2", "f16c"}
CRF_PARAMS = (3.0, 3.0, 80.0, 13.0, 10.0)  # Gaussian sxy, compat; bilateral sxy, srgb, compat


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install g++-aarch64-linux-gnu qemu-user)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


# ---- the target check, here ------------------------------------------------------------------------

def test_features_from_compiler_macros():
    x86 = ("#define __AVX2__ 1\n#define __SSE4_1__ 1\n#define __AVX512VNNI__ 1\n#define __AMX_TILE__ 1\n"
           "#define __FMA__ 1\n")
    assert _target.features_from_macros(x86) == ["sse4.1", "avx2", "fma", "avx512vnni", "amx-tile"]
    arm = "#define __ARM_NEON 1\n#define __ARM_FEATURE_DOTPROD 1\n#define __aarch64__ 1\n"
    assert _target.features_from_macros(arm) == ["neon", "dotprod"]


def test_cpu_module_knows_every_extension_a_build_can_assume():
    """_target.py (the build side) and csrc/target/cpu_features.cpp (the CPU side) name the same
    extensions: one the CPU side did not know would count as missing and refuse every import."""
    import platform

    from fastseg import _cpu

    arm = platform.machine().lower() in ("aarch64", "arm64")
    names = set(_target.ARM_MACROS.values()) if arm else set(_target.X86_FEATURES)
    assert names <= set(_cpu.known())


def test_this_build_records_what_its_compiler_enables():
    from fastseg import _cpu

    target = _target.built_target(_cpu)
    flags = ["-march=native"] if target["march"] == "native" else [f"-march={target['march']}"]
    assert target["features"] == _target.compiler_features(os.environ.get("CXX", "c++"), flags)
    assert _target.missing_features(target, _cpu) == []  # built here, so it runs here
    assert _native.available()


def test_cpu_module_answers_per_feature():
    from fastseg import _cpu

    assert _cpu.missing(["no-such-extension"]) == ["no-such-extension"]  # unknown: assumed absent
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = [line for line in cpuinfo.splitlines() if line.startswith("flags")]
    if lines:  # x86 Linux: cpuid agrees with the kernel's list of flags
        flags = set(lines[0].split(":", 1)[1].split())
        for name in ("avx", "avx2", "fma", "avx512f", "avx512bw"):
            assert _cpu.has(name) == (name in flags), name


def test_build_tree_for_another_cpu_is_stale(tmp_path):
    target = {"march": "native", "machine": "x86_64", "features": ["avx2", "avx512f"]}
    assert not _target.build_tree_is_stale(tmp_path, target)  # no record yet: a fresh tree
    _target.write_target(tmp_path / _target.TARGET_FILE, target)
    assert not _target.build_tree_is_stale(tmp_path, target)
    assert _target.build_tree_is_stale(tmp_path, dict(target, features=["avx2"]))


def test_wrong_cpu_refused_with_a_message(monkeypatch):
    class AVX2Only:
        def missing(self, features):
            return [f for f in features if f not in HASWELL]

    target = {"march": "native", "machine": "x86_64", "features": ["avx2", "avx512f", "avx512bw"]}
    missing = _target.missing_features(target, AVX2Only())
    assert missing == ["avx512f", "avx512bw"]
    message = _target.refusal(target, missing)
    assert "avx512f, avx512bw" in message and "FASTSEG_NATIVE_ARCH=off" in message
    monkeypatch.setattr(_native, "_C", None)
    monkeypatch.setattr(_native, "_IMPORT_ERROR", _native.WrongCPU(message))
    with pytest.raises(RuntimeError, match="built for another CPU"):
        fastseg.ops.upsample_argmax(torch.zeros(1, 2, 3, 3), size=(6, 6), backend="native")


# ---- other CPUs, emulated -------------------------------------------------------------------------

def test_check_refuses_this_build_on_haswell():
    """The real check, run by an emulated AVX2-only CPU: the extensions it names are exactly the ones
    this build assumes and Haswell lacks (none when the build is portable or made on an AVX2 machine)."""
    need("qemu-x86_64")
    from fastseg import _cpu

    script = ("import importlib.util, sys\n"
              "def load(name, path):\n"
              "    spec = importlib.util.spec_from_file_location(name, path)\n"
              "    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); return module\n"
              "cpu = load('fastseg._cpu', sys.argv[1]); target = load('fastseg_target', sys.argv[2])\n"
              "print(','.join(target.missing_features(target.built_target(cpu), cpu)))\n")
    done = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", script, _cpu.__file__,
                           _target.__file__], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = [f for f in _target.built_target(_cpu)["features"] if f not in HASWELL]
    assert done.stdout.strip().split(",") == (expected or [""])


@pytest.fixture(scope="module")
def crf_problem(tmp_path_factory, camvid_root):
    """A real CamVid crop with a noisy unary, written in crf_driver's input format."""
    image = np.asarray(Image.open(camvid_root / "val" / "0016E5_08093.png").convert("RGB"))[100:220, 160:320]
    truth = np.asarray(Image.open(camvid_root / "valannot" / "0016E5_08093.png"))[100:220, 160:320]
    image, truth = np.ascontiguousarray(image), np.minimum(truth, 10)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (11, *truth.shape)).astype(np.float32)
    logits[truth, np.arange(truth.shape[0])[:, None], np.arange(truth.shape[1])] += 1.5
    probs = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    path = tmp_path_factory.mktemp("crf") / "problem.bin"
    with open(path, "wb") as f:
        f.write(np.array([11, *truth.shape, 5], np.int32).tobytes())
        f.write(np.array(CRF_PARAMS, np.float32).tobytes())
        f.write(probs.tobytes())
        f.write(image.tobytes())
    crf = DenseCRF(n_iter=5, sxy_gaussian=CRF_PARAMS[0], compat_gaussian=CRF_PARAMS[1], sxy_bilateral=CRF_PARAMS[2],
                   srgb_bilateral=CRF_PARAMS[3], compat_bilateral=CRF_PARAMS[4])
    return path, crf(image, probs), probs.shape


def build_driver(compiler: str, flags: list[str], out: Path) -> Path:
    subprocess.run([compiler, "-std=c++17", "-O3", *flags, "-fopenmp", "-static", "-I", "csrc",
                    *CRF_SOURCES, "-o", str(out)], cwd=REPO, check=True, capture_output=True, timeout=900)
    return out


def run_driver(command: list[str], problem: Path, shape) -> np.ndarray:
    out = problem.with_suffix(".out")
    subprocess.run([*command, str(problem), str(out)], check=True, capture_output=True, timeout=600)
    raw = np.fromfile(out, np.uint8)
    n = int(np.prod(shape))
    q = raw[: 4 * n].view(np.float32).reshape(shape)
    np.testing.assert_array_equal(raw[4 * n:].reshape(shape[1:]), q.argmax(0))
    return q


def assert_same_crf(q: np.ndarray, here: np.ndarray) -> None:
    # the tolerance fastseg's CRF keeps against pydensecrf (tests/test_crf.py); in practice the
    # emulated builds give the same bits, as every product is rounded the same way
    assert (q.argmax(0) == here.argmax(0)).mean() >= 0.995
    assert np.abs(q - here).mean() <= 1e-3 and np.abs(q - here).max() < 1e-3


@pytest.mark.parametrize("march", ["armv8-a", "armv8.2-a"])
def test_crf_on_aarch64_matches_this_machine(crf_problem, tmp_path, march):
    need("aarch64-linux-gnu-g++", "qemu-aarch64")
    problem, here, shape = crf_problem
    driver = build_driver("aarch64-linux-gnu-g++", [f"-march={march}"], tmp_path / "crf_driver")
    assert_same_crf(run_driver(["qemu-aarch64", str(driver)], problem, shape), here)


def test_portable_x86_build_runs_on_haswell(crf_problem, tmp_path):
    need("qemu-x86_64")
    problem, here, shape = crf_problem
    driver = build_driver(os.environ.get("CXX", "c++"), ["-march=x86-64-v2"], tmp_path / "crf_driver")
    assert_same_crf(run_driver(["qemu-x86_64", "-cpu", "Haswell", str(driver)], problem, shape), here)
