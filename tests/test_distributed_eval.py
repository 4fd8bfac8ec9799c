"""`torchrun --nproc_per_node=2 -m fastseg eval` shards CamVid val over two processes, all-reduces the
confusion matrix (gloo) and gets exactly the single-process matrix."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from fastseg.distributed import Workers, available_cores

from _eval_model import save_small_model

FRAMES = 5  # odd: the two ranks get 3 and 2 frames
# torchrun's own module (the `torchrun` script runs exactly this) from this interpreter's environment;
# --standalone: a local rendezvous on a free port, so that parallel runs cannot clash
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastseg"]


def run_group(cmd, timeout, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run in a session of its own: on a timeout the whole group is killed, torchrun's
    worker processes included (killing torchrun alone would leave them running)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(cmd)}\nstdout:\n{out}\nstderr:\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_eval(argv_prefix, camvid_root, model, out, threads, timeout=300, status=0):
    """One `fastseg eval` as a subprocess (as a user runs it), on the first FRAMES val frames."""
    cmd = [*argv_prefix, "eval", "--dataset", "camvid", "--root", str(camvid_root), "--split", "val",
           "--model", str(model), "--limit", str(FRAMES), "--out", str(out), "--no-progress"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    proc = run_group(cmd, timeout, env=env, cwd=out.parent)
    assert (proc.returncode == 0) == (status == 0), \
        f"{' '.join(cmd)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    if status != 0:
        return None, proc.stderr
    return json.loads((out / "results.json").read_text()), proc.stdout


def test_torchrun_two_processes_equal_single_process(camvid_root, tmp_path):
    model = save_small_model(tmp_path / "small.safetensors")
    multi, printed = run_eval(TORCHRUN, camvid_root, model, tmp_path / "two", threads=None)
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


def test_torchrun_error_on_one_rank_stops_all(camvid_root, tmp_path):
    """Only rank 0 creates --out; when that fails the other rank must stop too, not wait for rank 0
    in the all-reduce (the subprocess timeout catches a hang)."""
    model = save_small_model(tmp_path / "small.safetensors")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    _, err = run_eval(TORCHRUN, camvid_root, model, blocker, threads=None, status=2)
    assert "fastseg eval: error:" in err and "File exists" in err, err
    assert "setup failed in another process" in err, err


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
