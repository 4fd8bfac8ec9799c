"""`pytest benchmarks/` runs the cases of fastseg.bench (the same as `fastseg bench`), one test each.

Every speed figure is a ratio against a reference timed in the same run, interleaved, as medians
(these machines are noisy). A case fails when fastseg's results disagree with a reference's, never
on speed, unless FASTSEG_BENCH_STRICT=1 asks for the ratios the cases aim at.

  pytest benchmarks/                               full shapes
  pytest benchmarks/ --quick                       small shapes, few rounds (what CI runs)
  pytest benchmarks/ --results FILE                the run's results file (default runs/bench/results-DATE.json)

The table of the whole run is printed at the end.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from fastseg.bench import results  # the root conftest.py has settled TRITON_INTERPRET


def pytest_addoption(parser):
    parser.addoption("--results", type=Path, default=None, metavar="FILE",
                     help="where to write this run's results file (JSON)")


class Run:
    """What the run's cases gave, in order, and how to write it down."""

    def __init__(self):
        self.items: list = []
        self.machine, self.started, self.t0 = results.machine(), results.now(), time.perf_counter()
        self.quick = False

    def content(self) -> dict:
        return results.results(self.quick, self.items, time.perf_counter() - self.t0, self.started, self.machine)


RUN_KEY = pytest.StashKey[Run]()


def pytest_configure(config):
    config.stash[RUN_KEY] = Run()


@pytest.fixture
def bench_run(request, quick) -> Run:
    run = request.config.stash[RUN_KEY]
    run.quick = quick
    return run


def pytest_sessionfinish(session):
    run = session.config.stash.get(RUN_KEY, None)
    if run is None or not run.items:
        return
    path = session.config.getoption("--results") or \
        Path("runs") / "bench" / f"results-{run.started.strftime('%Y%m%d-%H%M%S')}.json"
    run.path, run.written = path, run.content()
    results.write(path, run.written)


def pytest_terminal_summary(terminalreporter, config):
    run = config.stash.get(RUN_KEY, None)
    if run is None or not getattr(run, "written", None):
        return
    _, rows, figures = results.load(run.path)
    terminalreporter.write_sep("=", "fastseg bench")
    terminalreporter.write_line(results.header(run.written))
    terminalreporter.write_line(results.markdown(rows, figures))
    terminalreporter.write_line(f"results file: {run.path}")
