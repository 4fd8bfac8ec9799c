"""Every case of fastseg.bench as a test: results agree with the references, ratios recorded."""
from __future__ import annotations

import os
import sys

import pytest

from fastseg.bench import CASES, run_case
from fastseg.bench.measure import Row
from fastseg.bench.results import markdown


@pytest.mark.parametrize("name", list(CASES))
def test_case(name, quick, bench_run, request):
    options = {"camvid": request.getfixturevalue("camvid_root")} if "camvid" in CASES[name].options else {}
    items = run_case(name, quick, **options)
    assert items, f"{name}: no rows (a reference's package is missing: pip install fastseg-engine[test])"
    bench_run.items += items
    rows = [i for i in items if isinstance(i, Row)]
    print("\n" + markdown(rows, [i for i in items if not isinstance(i, Row)]), file=sys.stderr)
    assert all(i.ok for i in items), [i for i in items if not i.ok]
    if os.environ.get("FASTSEG_BENCH_STRICT") == "1":
        short = [f"{r.ours} vs {r.reference}: {r.ratio:.2f}x < {r.target}x" for r in rows
                 if r.target is not None and r.ratio < r.target]
        assert not short, short
        late = [f"{i.shape}: {i.text}" for i in items
                if not isinstance(i, Row) and i.values.get("within_bound") is False]
        assert not late, late
