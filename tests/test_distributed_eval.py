"""`torchrun --nproc_per_node=2 -m fastseg eval` shards CamVid val over two processes, all-reduces the
confusion matrix (gloo) and gets exactly the single-process matrix."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _eval_model import save_small_model
from fastseg.distributed import Workers, available_cores

FRAMES = 5  # odd: the two ranks get 3 and 2 frames


def run_eval(argv_prefix, camvid_root, model, out, threads, timeout=150):
    """One `fastseg eval` as a subprocess (as a user runs it), on the first FRAMES val frames."""
    cmd = [*argv_prefix, "eval", "--dataset", "camvid", "--root", str(camvid_root), "--split", "val",
           "--model", str(model), "--limit", str(FRAMES), "--out", str(out), "--no-progress"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=out.parent)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads((out / "results.json").read_text()), proc.stdout


def test_torchrun_two_processes_equal_single_process(camvid_root, tmp_path):
    model = save_small_model(tmp_path / "small.safetensors")
    # torchrun's own module (the `torchrun` script runs exactly this) from this interpreter's
    # environment; --standalone: a local rendezvous on a free port, so parallel runs cannot clash
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "fastseg"]
    multi, printed = run_eval(torchrun, camvid_root, model, tmp_path / "two", threads=None)
    assert multi["processes"] == 2 and multi["frames"] == FRAMES
    # each rank took its share of the cores; the single process below uses as many threads, so that
    # both runs compute each frame the same way and the matrices can be compared exactly
    threads = max(1, available_cores() // 2)
    assert multi["threads_per_process"] == threads
    single, _ = run_eval([sys.executable, "-m", "fastseg"], camvid_root, model, tmp_path / "one", threads=threads)
    assert single["processes"] == 1 and single["frames"] == FRAMES

    a = np.array(multi["results"]["plain"]["confusion_matrix"])
    b = np.array(single["results"]["plain"]["confusion_matrix"])
    np.testing.assert_array_equal(a, b)
    assert (a > 0).sum() > 11, "the test model should spread its predictions over several classes"
    assert multi["results"]["plain"]["miou"] == single["results"]["plain"]["miou"]
    assert printed.count("mean") == 1, "only rank 0 prints the table"
    assert (tmp_path / "two" / "confusion_matrix.png").is_file()


def test_shards_cover_the_split_once():
    n = 11
    for world in (1, 2, 3, 4):
        shards = [Workers(rank=r, world_size=world).shard(range(n)) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_single_process_without_torchrun_env(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    ctx = Workers.from_env("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.initialised) == (0, 1, True, False)
    import torch

    t = torch.arange(3.0)
    assert ctx.sum(t) is t
    ctx.close()


@pytest.mark.parametrize("env, message", [({"WORLD_SIZE": "two"}, "not an integer"),
                                          ({"WORLD_SIZE": "2", "RANK": "2"}, "outside WORLD_SIZE")])
def test_bad_torchrun_environment(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        Workers.from_env("cpu")
