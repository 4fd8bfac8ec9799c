"""`make gpu-check`: prove the GPU path on a machine with a CUDA GPU, in under 8 minutes, with what that
machine already has (its own python3 / $PYTHON, torch, Triton and CUDA; nothing is installed).

Runs, each in the time left to it: the GPU tests (`pytest -m gpu` over the test files that hold
them), the recorder of the table of convolution shapes where Triton beats cuDNN
(benchmarks/gpu/conv_table.py), the Segmenter's frame rate and p50 / p99 latency (default model,
LR-ASPP, DeepLabV3-ResNet50; fp16 and fp32; 480x360 and 2048x1024), and each op against eager
PyTorch and torch.compile in the same run. Writes gpu-report.md (the GPU's name, versions, every
result, and whatever was not run and why). Exits 1 without a GPU, and when anything failed or
was not run.

    python3 benchmarks/gpu/check.py [--report gpu-report.md] [--seconds 450]
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # this checkout's fastseg, not an installed one

SECONDS = 420   # the stages; with start-up, a stage that overruns its share and the report: under 8 minutes
TESTS_SECONDS = 170
CONV_TABLE_SECONDS = 50
FRAMES_SECONDS = 110
SECONDS_PER_FRAME_LOOP = 2.0
COMPILE_NEEDS = 60  # seconds a torch.compile reference may take to build; not started with less left
CONV_TABLE = REPO / "benchmarks" / "gpu" / "conv_table.py"


class Budget:
    """Seconds left of the run, and what each stage may take of them."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.clock = clock
        self.end = clock() + seconds

    def left(self) -> float:
        return max(0.0, self.end - self.clock())

    def stage(self, cap: float, keep: float = 0.0) -> Budget:
        """A sub-budget: at most `cap` seconds, leaving `keep` seconds for the stages after it."""
        return Budget(max(0.0, min(cap, self.left() - keep)), self.clock)


class Report:
    def __init__(self):
        self.sections: list[tuple[str, str]] = []
        self.not_run: list[str] = []
        self.failed: list[str] = []

    def add(self, title: str, body: str) -> None:
        self.sections.append((title, body))

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_run

    def markdown(self, header: str) -> str:
        parts = ["# fastseg GPU report", "", header, ""]
        verdict = "all passed" if self.ok else "NOT ALL PASSED"
        parts += [f"**Result: {verdict}.**", ""]
        parts += [f"- failed: {f}" for f in self.failed] + [f"- not run: {n}" for n in self.not_run]
        for title, body in self.sections:
            parts += ["", f"## {title}", "", body.rstrip()]
        return "\n".join(parts) + "\n"


def gpu_header(torch) -> str:
    props = torch.cuda.get_device_properties(0)
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    try:
        from fastseg import _native
        native = "with CUDA" if _native.has_cuda() else "without CUDA"
    except Exception as e:  # an extension built elsewhere, for another Python: say so, run the rest
        native = f"not loadable ({type(e).__name__}: {e})"
    from fastseg.bench.results import git_commit, now

    commit = git_commit(REPO)
    return (f"GPU: **{torch.cuda.get_device_name(0)}** (sm_{props.major}{props.minor}, "
            f"{props.total_memory / 2**30:.1f} GiB, {torch.cuda.device_count()} device(s)); "
            f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
            f"Triton {triton_version}, Python {platform.python_version()}; fastseg._C {native}; "
            f"commit {(commit['commit'] or 'unknown')[:10]}{' + local changes' if commit['dirty'] else ''}; "
            f"{now().strftime('%Y-%m-%dT%H:%M:%SZ')}")


def gpu_test_files() -> list[str]:
    """The test files that hold GPU tests (marked `gpu`); only these are collected, so a test module
    that needs a package this machine lacks does not stand in the way."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "mark.gpu" in p.read_text(errors="replace"))


def run_tests(report: Report, budget: Budget) -> None:
    files = gpu_test_files()
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu", "-p", "no:cacheprovider", *files]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRITON_INTERPRET": "0"}  # real kernels on real tensors
    try:
        import pytest  # noqa: F401
    except ImportError:
        report.not_run.append("the GPU tests: pytest is not installed for this Python")
        return
    seconds = budget.left()
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        report.failed.append(f"the GPU tests did not finish in {seconds:.0f} s")
        report.add("GPU tests (timed out)", _fenced(out))
        return
    summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    if done.returncode != 0:
        report.failed.append(f"GPU tests: {summary}")
    report.add(f"GPU tests: {summary}", f"`{' '.join(cmd[1:])}`\n\n" + _fenced(done.stdout + done.stderr))


def run_conv_table(report: Report, budget: Budget) -> None:
    # The recorder (benchmarks/gpu/conv_table.py) writes this GPU's entry of the packaged table
    # (fastseg/ops/conv_table.json, or $FASTSEG_CONV_TABLE), which `auto` reads on CUDA; commit it.
    if not CONV_TABLE.exists():
        report.not_run.append(f"the conv table: {CONV_TABLE.relative_to(REPO)} is not in this checkout")
        return
    cmd = [sys.executable, str(CONV_TABLE), "--tiles"]  # --tiles: is the tile rule's pick the fastest?
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    seconds = budget.left()
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        report.failed.append(f"the conv table recorder did not finish in {seconds:.0f} s")
        return
    if done.returncode != 0:
        report.failed.append(f"the conv table recorder exited with status {done.returncode}")
    where = os.environ.get("FASTSEG_CONV_TABLE", "fastseg/ops/conv_table.json")
    report.add(f"Convolutions: Triton against cuDNN (table written to {where})", _fenced(done.stdout + done.stderr))


def run_frames(report: Report, budget: Budget) -> None:
    import torch

    from fastseg.bench import gpu

    # every model, precision and size first; then, while time is left, the small frame as a CUDA graph
    # (extra figures: not running them for lack of time is no failure)
    order = [(case, precision, size, False) for case in gpu.SEGMENTER_MODELS for precision in gpu.PRECISIONS
             for size in gpu.FRAME_SIZES]
    order += [(case, "fp16", gpu.FRAME_SIZES[0], True) for case in gpu.SEGMENTER_MODELS]
    figures: list = []
    models: dict = {}
    for case, precision, size, graph in order:
        what = f"Segmenter frames, {case.label}, {precision}{', cuda_graph' if graph else ''}, {size[1]}x{size[0]}"
        if budget.left() < 3 * SECONDS_PER_FRAME_LOOP:
            if not graph:
                report.not_run.append(f"{what} (time budget)")
            continue
        try:
            if case not in models:
                models[case] = gpu.load_model(case)
            figures.append(gpu.segmenter_frames(case, models[case], precision, size, SECONDS_PER_FRAME_LOOP, graph))
        except Exception as e:
            report.failed.append(f"{what}: {type(e).__name__}: {e}")
            traceback.print_exc()
        finally:
            torch.cuda.empty_cache()
    report.add("Segmenter frames (host uint8 frames in, labels read back each frame; wall clock per frame)",
               frames_table(figures))


def frames_table(figures) -> str:
    head = ("| model | precision | frame | frames/s | p50 ms | p99 ms | frames |\n"
            "| --- | --- | --- | ---: | ---: | ---: | ---: |")
    rows = []
    for f in figures:
        v = f.values
        precision = v["precision"] + (" + cuda_graph" if v["cuda_graph"] else "")
        rows.append(f"| {v['model']} | {precision} | {v['width']}x{v['height']} | {v['fps']:.1f} | "
                    f"{v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['frames']} |")
    return "\n".join([head, *rows])


def run_ops(report: Report, budget: Budget) -> None:
    import torch

    from fastseg.bench import gpu
    from fastseg.bench.results import markdown

    rows = []
    for reference in gpu.REFERENCES:
        for case in gpu.OP_CASES:
            what = f"{case.__name__} against {reference}"
            needs = COMPILE_NEEDS if reference == "torch.compile" else 5
            if budget.left() < needs:
                report.not_run.append(f"{what} (time budget)")
                continue
            try:
                rows += case(reference)
            except Exception as e:
                report.failed.append(f"{what}: {type(e).__name__}: {e}")
                traceback.print_exc()
            finally:
                torch.cuda.empty_cache()
    report.failed += [f"{r.case} {r.shape}: disagrees with {r.reference} ({r.agreement.text})"
                      for r in rows if not r.ok]
    report.add("Ops against eager PyTorch and torch.compile (same run, CUDA-event medians; speed-up = "
               "reference / fastseg)", markdown(rows, []))


def _fenced(text: str, lines: int = 150) -> str:
    kept = text.strip().splitlines()
    cut = [f"... ({len(kept) - lines} lines above left out)"] if len(kept) > lines else []
    return "```\n" + "\n".join(cut + kept[-lines:]) + "\n```"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, default=Path("gpu-report.md"))
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print(f"gpu-check: torch is not installed for {sys.executable}: nothing was run", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU on this machine (torch {torch.__version__} sees none): nothing was run",
              file=sys.stderr)
        return 1
    os.environ["TRITON_INTERPRET"] = "0"  # real Triton kernels (before anything imports triton)
    budget = Budget(args.seconds)
    report = Report()
    stages = ((run_tests, TESTS_SECONDS), (run_conv_table, CONV_TABLE_SECONDS), (run_frames, FRAMES_SECONDS),
              (run_ops, args.seconds))
    for i, (stage, cap) in enumerate(stages):
        later = sum(c for _, c in stages[i + 1:-1]) + (30 if i < len(stages) - 1 else 0)
        print(f"gpu-check: {stage.__name__.removeprefix('run_')} ({budget.left():.0f} s left)", file=sys.stderr)
        stage(report, budget.stage(cap, keep=later))
    args.report.write_text(report.markdown(gpu_header(torch)))
    print(f"gpu-check: wrote {args.report}: {'all passed' if report.ok else 'NOT ALL PASSED'}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
