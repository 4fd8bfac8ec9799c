"""csrc/common/threads.h: an exception thrown inside parallel_region, on OpenMP's pool or on threads
of the call's own, reaches the caller (rethrown after the region) instead of ending the process.

Compiled here with g++ as a small program, since no kernel can be made to throw on demand."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"
PROGRAM = r"""
#include <cstdio>
#include <new>
#include <stdexcept>
#include "common/threads.h"

int main() {
  int caught = 0;
  for (bool own : {false, true}) {
    for (int thrower : {0, 1}) {  // the caller's thread, and a worker
      try {
        fastseg::parallel_region(2, own, [&](int index) {
          if (index == thrower) throw std::bad_alloc();
        });
      } catch (const std::bad_alloc&) {
        ++caught;
      }
    }
    int ran = 0;  // and a region that throws nothing still runs every index
    fastseg::parallel_region(2, own, [&](int) {
#pragma omp atomic
      ++ran;
    });
    if (ran != 2) return 3;
  }
  std::printf("caught %d\n", caught);
  return caught == 4 ? 0 : 2;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_exceptions_in_parallel_region_reach_the_caller(tmp_path):
    source = tmp_path / "threads_test.cpp"
    source.write_text(PROGRAM)
    binary = tmp_path / "threads_test"
    subprocess.run(["g++", "-std=c++17", "-O1", "-fopenmp", "-pthread", f"-I{CSRC}", str(source), "-o", str(binary)],
                   check=True, capture_output=True, timeout=300)
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60,
                            env={"OMP_NUM_THREADS": "2", "OMP_DYNAMIC": "false"})
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert result.stdout.strip() == "caught 4"
