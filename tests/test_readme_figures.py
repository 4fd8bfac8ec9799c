"""README.md's figures are generated from the committed results file: this fails when they were
edited by hand, or when the results file changed without regenerating them."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("readme_figures", REPO / "tools" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_figures_are_generated_from_the_results_file():
    tool = _tool()
    readme = (REPO / "README.md").read_text()
    assert tool.replace(readme, tool.RESULTS) == readme, \
        "README.md's figures differ from benchmarks/results/latest.json: run python tools/readme_figures.py"


def test_the_committed_results_file_is_complete():
    content = json.loads((REPO / "benchmarks" / "results" / "latest.json").read_text())
    assert {"quick", "date", "commit", "machine", "rows", "figures"} <= set(content)
    assert {"model", "flags", "cores"} <= set(content["machine"]["cpu"]) and content["machine"]["torch"]
    assert content["rows"] and all(r["ok"] for r in content["rows"])
    if content["quick"]:
        assert "A quick run" in (REPO / "README.md").read_text()


def test_a_hand_edited_figure_is_found(tmp_path):
    tool = _tool()
    readme = (REPO / "README.md").read_text()
    content = json.loads((REPO / tool.RESULTS).read_text())
    first = content["rows"][0]
    edited = readme.replace(f"{first['ratio']:.2f}x", f"{first['ratio'] + 1:.2f}x", 1)
    assert edited != readme
    copy = tmp_path / "README.md"
    copy.write_text(edited)
    assert tool.main(["--check", "--readme", str(copy)]) == 1
    assert tool.main(["--readme", str(copy)]) == 0 and copy.read_text() == readme  # rewritten
    assert tool.main(["--check", "--readme", str(copy)]) == 0
    with pytest.raises(ValueError, match="markers"):
        tool.replace("no markers here", tool.RESULTS)


def test_every_figures_block_is_generated_from_the_file_its_marker_names():
    tool = _tool()
    readme = (REPO / "README.md").read_text()
    named = tool.blocks(readme)
    assert tool.RESULTS in named and Path("benchmarks/results/ray.json") in named
    for path in named:
        assert (REPO / path).is_file(), path
        assert tool.replace(readme, path, named=path) == readme, f"README.md's figures differ from {path}"
    assert tool.replace_all(readme) == readme
