"""setup.py drives CMake, which builds the torch-free pybind11 extension `fastseg._C`.

Environment knobs:
  FASTSEG_CUDA=auto|on|off   compile csrc/cuda/*.cu (auto: when a CUDA compiler is found)
  FASTSEG_CUDA_ARCHS="80;90" CUDA architectures for the CUDA build
  FASTSEG_BUILD_DIR=path     CMake build tree (kept between builds so rebuilds are incremental)
  FASTSEG_BUILD_TYPE=Release CMake build type
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(os.environ.get("FASTSEG_BUILD_DIR", ROOT / "build" / "cmake")).resolve()
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
            f"-DFASTSEG_CUDA_ARCHS={os.environ.get('FASTSEG_CUDA_ARCHS', '80;90')}",
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


setup(
    packages=find_packages(include=["fastseg", "fastseg.*"]),
    package_data={"fastseg": ["weights/*.safetensors", "weights/*.json"]},
    ext_modules=[CMakeExtension("fastseg._C")],
    cmdclass={"build_ext": CMakeBuild},
)
