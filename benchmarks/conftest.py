"""pytest-benchmark suites: each fused op against the references users would otherwise run.

Every speed figure is a ratio against a reference timed in the same run, interleaved, as medians
(these machines are noisy). Benchmarks assert equal results; they never fail on speed unless
FASTSEG_BENCH_STRICT=1 asks them to check the issue's targets.

  pytest benchmarks/            full shapes
  pytest benchmarks/ --quick    small shapes, few rounds (what CI runs)
"""
from __future__ import annotations

import os
import sys

import pytest

from fastseg._timing import interleaved_medians  # the root conftest.py has settled TRITON_INTERPRET


class Comparison:
    """Times `ours` against references in one interleaved run, prints a table, records ratios."""

    def __init__(self, benchmark, title: str):
        self.benchmark = benchmark
        self.title = title

    def __call__(self, ours: dict, references: dict, rounds: int, warmup: int = 1,
                 targets: dict | None = None, settle: float = 0.0) -> dict:
        medians = interleaved_medians({**ours, **references}, rounds, warmup, settle)
        lines = [f"\n{self.title} (median of {rounds} interleaved rounds)"]
        lines.append(f"  {'implementation':34s} {'median ms':>10s}")
        for name, m in medians.items():
            lines.append(f"  {name:34s} {m * 1e3:10.3f}")
        ratios = {}
        for o in ours:
            for r in references:
                ratios[f"{r} / {o}"] = medians[r] / medians[o]
                lines.append(f"  speed-up of {o} over {r}: {ratios[f'{r} / {o}']:.2f}x")
        print("\n".join(lines), file=sys.stderr)
        if self.benchmark is not None:
            self.benchmark.extra_info.update({f"ratio {k}": round(v, 3) for k, v in ratios.items()})
            self.benchmark.extra_info.update({f"median_ms {k}": round(v * 1e3, 4) for k, v in medians.items()})
            first = next(iter(ours.values()))
            self.benchmark.pedantic(first, rounds=max(1, min(rounds, 5)), iterations=1)
        if os.environ.get("FASTSEG_BENCH_STRICT") == "1" and targets:
            for key, minimum in targets.items():
                assert ratios[key] >= minimum, f"{key}: {ratios[key]:.2f}x < target {minimum}x"
        return ratios


@pytest.fixture
def compare(benchmark, request):
    return Comparison(benchmark, request.node.name)
