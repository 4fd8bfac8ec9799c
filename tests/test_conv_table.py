"""The convolution table (fastseg/ops/_conv_table.py): cuDNN runs CUDA convolutions unless the table,
measured on that very GPU by benchmarks/gpu/conv_table.py, lists the shape for Triton."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastseg.ops import _conv_table

REPO = Path(__file__).resolve().parent.parent
RECORDER = REPO / "benchmarks" / "gpu" / "conv_table.py"


@pytest.fixture
def conv_table(tmp_path, monkeypatch):
    """Write a table to a temporary file, point FASTSEG_CONV_TABLE at it, pretend the GPU's name."""
    path = tmp_path / "conv_table.json"
    monkeypatch.setenv(_conv_table.TABLE_ENV, str(path))
    monkeypatch.setattr(_conv_table, "_device_name", lambda device: "Fake GPU")
    _conv_table.reload()

    def write(text):
        path.write_text(text)
        _conv_table.reload()
    yield write
    _conv_table.reload()


def _key(x):
    w = torch.empty(8, 4, 3, 3)
    return _conv_table.atrous_key(x, w, (1, 1), (2, 2), (2, 2), 1)


def test_conv_table_missing_or_empty_means_cudnn(conv_table):
    x = torch.empty(1, 4, 9, 9)
    assert not _conv_table.triton_wins(_key(x), x, None)  # no file
    conv_table("")
    assert not _conv_table.triton_wins(_key(x), x, None)
    conv_table("{not json")
    with pytest.warns(RuntimeWarning, match="not a convolution table"):
        assert not _conv_table.triton_wins(_key(x), x, None)


def test_conv_table_names_exact_shapes_per_gpu(conv_table):
    x = torch.empty(1, 4, 9, 9)
    table = {"format": 1, "gpus": {"Fake GPU": {"triton_wins": [_key(x)]}, "Other GPU": {"triton_wins": []}}}
    conv_table(json.dumps(table))
    assert _conv_table.triton_wins(_key(x), x, None)
    for other in (torch.empty(1, 4, 9, 10), x.half(), x.contiguous(memory_format=torch.channels_last)):
        assert not _conv_table.triton_wins(_key(other), other, None), _key(other)
    table["gpus"] = {"Other GPU": table["gpus"]["Fake GPU"]}
    conv_table(json.dumps(table))
    assert not _conv_table.triton_wins(_key(x), x, None)


def test_conv_table_recording_collects_each_case_once():
    x = torch.empty(2, 4, 9, 9)
    with _conv_table.recording() as cases:
        for _ in range(3):
            _conv_table.triton_wins(_key(x), x, lambda x, backend: backend)
    assert list(cases) == [_key(x)]
    case = cases[_key(x)]
    assert case.x_shape == (2, 4, 9, 9) and case.dtype == torch.float32 and not case.channels_last
    assert case.run(x, "triton") == "triton"
    _conv_table.triton_wins(_key(x), x, None)  # outside the block: nothing recorded
    assert len(cases) == 1


def test_fp32_key_says_whether_tf32_is_allowed(monkeypatch):
    x = torch.empty(1, 4, 9, 9)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    with_tf32 = _key(x)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert with_tf32 != _key(x) and "float32+tf32" in with_tf32
    assert _key(x.half()) == _key(x.half()).replace("+tf32", "")


def _recorder():
    import importlib.util

    spec = importlib.util.spec_from_file_location("conv_table_recorder", RECORDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recorder_without_a_gpu_says_why_and_exits_2(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the recorder would record")
    out = tmp_path / "table.json"
    done = subprocess.run([sys.executable, str(RECORDER), "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no table recorded" in done.stderr, done.stderr
    assert not out.exists()


def test_recorder_table_is_what_auto_reads(tmp_path, conv_table, monkeypatch):
    recorder = _recorder()
    x = torch.empty(1, 4, 9, 9)
    fast, slow = _key(x), _key(x.half())
    entry = recorder.gpu_entry({fast: {"triton": 1.0, "cudnn": 2.0}, slow: {"triton": 1.0, "cudnn": 1.02}}, 1.05)
    assert entry["triton_wins"] == [fast] and entry["timings"][slow] == {"triton_ms": 1.0, "cudnn_ms": 1.02}
    path = Path(_conv_table.table_path())
    recorder.write_table(path, "Other GPU", {"triton_wins": [slow]})
    recorder.write_table(path, "Fake GPU", entry)
    table = json.loads(path.read_text())
    assert set(table["gpus"]) == {"Other GPU", "Fake GPU"}  # other GPUs' entries are kept
    _conv_table.reload()
    assert _conv_table.triton_wins(fast, x, None) and not _conv_table.triton_wins(slow, x.half(), None)
