"""Fixtures shared by tests/ and benchmarks/. Real data lives in ../shared/data (never in the repository)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# No GPU on these machines: Triton kernels run under its CPU interpreter. This must be set before
# triton is imported anywhere; a machine with a GPU runs them for real.
if os.environ.get("TRITON_INTERPRET") is None and not os.path.exists("/dev/nvidia0"):
    os.environ["TRITON_INTERPRET"] = "1"

# The Segmenter caches its ONNX exports; tests keep theirs in a folder of their own, not in the
# user's cache (and start without entries a previous run left).
if "FASTSEG_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["FASTSEG_CACHE"] = tempfile.mkdtemp(prefix="fastseg-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FASTSEG_CACHE"], ignore_errors=True)

REPO = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FASTSEG_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared; in CI (CI=true) its absence fails loudly, elsewhere the test skips."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing: tests that need real data read it from ../shared"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    return shared_path("data", "camvid")


# Benchmarks' CI mode, registered here so one command line may mix tests/ and benchmarks/
def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="small shapes and few rounds (CI)")


@pytest.fixture(scope="session")
def quick(request) -> bool:
    return bool(request.config.getoption("--quick")) or os.environ.get("FASTSEG_BENCH_QUICK") == "1"
