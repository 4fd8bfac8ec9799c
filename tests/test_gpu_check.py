"""`make gpu-check` where there is no GPU (it must say so and fail), and the parts of its driver
(benchmarks/gpu/check.py) and of the GPU timing (fastseg/bench/cuda_timing.py) that run anywhere."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastseg.bench.cuda_timing import frame_latencies, percentile
from fastseg.bench.measure import Agreement, Figure, Reference, measure

REPO = Path(__file__).resolve().parents[1]
NEEDS_NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: make gpu-check runs")


def _check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu" / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@NEEDS_NO_GPU
def test_the_script_says_there_is_no_gpu_and_fails(tmp_path):
    report = tmp_path / "gpu-report.md"
    done = subprocess.run([sys.executable, "benchmarks/gpu/check.py", "--report", str(report)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "no CUDA GPU" in done.stderr, done.stderr
    assert not report.exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_gpu_check_runs_the_machines_python_and_sets_nothing_up():
    """No venv, no install: the one command make runs is the GPU machine's python3, or $PYTHON."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "MAKEFLAGS", "MAKELEVEL")}

    def planned(*args, **extra):
        done = subprocess.run(["make", "-n", "gpu-check", *args], cwd=REPO, capture_output=True, text=True,
                              env={**env, **extra}, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()

    command = "benchmarks/gpu/check.py --report gpu-report.md"
    assert planned() == [f"python3 {command}"]
    assert planned(PYTHON="/opt/py/bin/python3") == [f"/opt/py/bin/python3 {command}"]
    assert planned("PYTHON=/usr/bin/python3.12") == [f"/usr/bin/python3.12 {command}"]


@NEEDS_NO_GPU
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_gpu_check_fails_without_a_gpu():
    done = subprocess.run(["make", "-s", "gpu-check", f"PYTHON={sys.executable}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "no CUDA GPU" in done.stderr, done.stderr


def test_budget_caps_each_stage_and_keeps_time_for_the_next():
    check = _check_module()
    now = [0.0]
    budget = check.Budget(100, clock=lambda: now[0])
    assert budget.stage(60, keep=50).left() == 50
    assert budget.stage(30).left() == 30
    now[0] = 90.0
    assert budget.left() == 10 and budget.stage(60, keep=20).left() == 0


def test_gpu_tests_are_found_by_their_marker():
    files = _check_module().gpu_test_files()
    assert "tests/test_segmenter_cuda.py" in files and "tests/test_segmenter_frames.py" not in files
    assert "tests/test_cuda_native_ops.py" in files  # the CUDA C++ kernels, upsample + argmax among them


def test_report_says_what_ran_and_what_did_not():
    check = _check_module()
    report = check.Report()
    fig = Figure("Segmenter frames", "x", "y", True, values={
        "model": "LR-ASPP", "precision": "fp16", "height": 360, "width": 480, "cuda_graph": True,
        "fps": 512.25, "p50_ms": 1.9, "p99_ms": 2.5, "frames": 300})
    report.add("Segmenter frames", check.frames_table([fig]))
    assert report.ok
    report.not_run.append("aspp against torch.compile (time budget)")
    text = report.markdown("GPU: **Test GPU**")
    assert not report.ok and "NOT ALL PASSED" in text and "not run: aspp against torch.compile" in text
    assert "| LR-ASPP | fp16 + cuda_graph | 480x360 | 512.2 | 1.90 | 2.50 | 300 |" in text
    assert "GPU: **Test GPU**" in text


def test_measure_takes_its_timer():
    def timer(candidates, rounds, warmup, settle):
        return {key: (0.002 if key[0] == "ours" else 0.010) for key in candidates}

    rows = measure("case", "shape", {"fastseg": lambda: None},
                   {"ref": Reference(lambda: None, Agreement.exact(True))}, rounds=1, timer=timer)
    assert rows[0].ratio == pytest.approx(5.0)


def test_frame_latencies_and_percentiles():
    frames = iter(range(1000))
    lat = frame_latencies(frames, seconds=0.0, min_frames=7)
    assert len(lat) == 7 and all(t >= 0 for t in lat) and next(frames) == 8  # the first one untimed
    assert len(frame_latencies(iter(range(1000)), seconds=60, min_frames=1, max_frames=4)) == 4
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0], 100) == 2.0 and percentile([5.0], 99) == 5.0
