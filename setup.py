"""setup.py drives CMake, which builds the torch-free pybind11 extension `fastseg._C`.

Environment knobs:
  FASTSEG_CUDA=auto|on|off   compile csrc/cuda/*.cu (auto: when a CUDA compiler is found)
  FASTSEG_CUDA_ARCHS="80;87;90" CUDA architectures for the CUDA build (87: Jetson Orin)
  FASTSEG_BUILD_DIR=path     CMake build tree (kept between builds so rebuilds are incremental)
  FASTSEG_BUILD_TYPE=Release CMake build type
  FASTSEG_NATIVE_ARCH=on|off on: tune for this CPU (-march=native); off: a portable build for any CPU
                             of its kind (x86-64-v2, armv8-a), for wheels and shared installs

The instruction-set extensions the build assumes are compiled into fastseg._cpu, which fastseg asks
before it loads _C: it refuses a _C this CPU cannot run (fastseg/_target.py).
"""
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PORTABLE_MARCH = {"x86_64": "x86-64-v2", "amd64": "x86-64-v2", "aarch64": "armv8-a", "arm64": "armv8-a"}


def _load_target_module():
    # fastseg/_target.py is plain standard-library Python; load it without importing the package
    spec = importlib.util.spec_from_file_location("fastseg_build_target", ROOT / "fastseg" / "_target.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_target() -> dict:
    """-march for this build, and the extensions it enables (asked of the compiler)."""
    native = os.environ.get("FASTSEG_NATIVE_ARCH", "on").lower()
    if native not in ("on", "off"):
        raise ValueError(f"FASTSEG_NATIVE_ARCH must be on or off, not {native!r}")
    machine = platform.machine().lower()
    march = "native" if native == "on" else PORTABLE_MARCH.get(machine)
    if march is None:
        raise ValueError(f"FASTSEG_NATIVE_ARCH=off: no portable -march known for {machine}")
    compiler = os.environ.get("CXX", "c++")
    features = _load_target_module().compiler_features(compiler, [f"-march={march}"])
    return {"march": march, "machine": machine, "features": features}


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(os.environ.get("FASTSEG_BUILD_DIR", ROOT / "build" / "cmake")).resolve()
        target_module = _load_target_module()
        target = build_target()
        if target_module.build_tree_is_stale(build_dir, target):
            print(f"fastseg: {build_dir} was built for another CPU target; building afresh", file=sys.stderr)
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True, exist_ok=True)
        cuda = os.environ.get("FASTSEG_CUDA", "auto").lower()
        if cuda not in ("auto", "on", "off"):
            raise ValueError(f"FASTSEG_CUDA must be auto, on or off, not {cuda!r}")
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('FASTSEG_BUILD_TYPE', 'Release')}",
            f"-DFASTSEG_CUDA={cuda.upper()}",
            f"-DFASTSEG_CUDA_ARCHS={os.environ.get('FASTSEG_CUDA_ARCHS', '80;87;90')}",
            f"-DFASTSEG_MARCH={target['march']}",
            f"-DFASTSEG_TARGET_MACHINE={target['machine']}",
            f"-DFASTSEG_TARGET_FEATURES={','.join(target['features'])}",
        ]
        try:
            import ninja  # noqa: F401

            args.append("-GNinja")
        except ImportError:
            pass
        cache = build_dir / "CMakeCache.txt"
        if cache.exists() and ("Ninja" in cache.read_text()) != ("-GNinja" in args):
            cache.unlink()  # generator changed: start the tree afresh
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *args], check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs], check=True)
        target_module.write_target(build_dir / target_module.TARGET_FILE, target)


setup(
    packages=find_packages(include=["fastseg", "fastseg.*"]),
    package_data={"fastseg": ["weights/*.safetensors", "weights/*.json", "weights/*.int8.onnx",
                              "assets/camvid_demo/*", "ops/conv_table.json"]},
    # one CMake tree builds both (the second call finds nothing left to do)
    ext_modules=[CMakeExtension("fastseg._C"), CMakeExtension("fastseg._cpu")],
    cmdclass={"build_ext": CMakeBuild},
)
