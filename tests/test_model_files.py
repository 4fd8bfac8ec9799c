"""Untrusted model files: `fastseg.models.load` refuses every malformed config, lying header and
foreign file with one ValueError naming the file (and the config field), before allocating anything
of the size the file claims; the command line shows that line and exits 2, without a traceback."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import fastseg.models as M
from fastseg.cli import main
from fastseg.models import io as model_io
from fastseg.models.io import CONFIG_KEY

from _cli import small_model

pytestmark = pytest.mark.reliability  # part of the reliability suite (ARCHITECTURE.md)


def write(path, config, tensors=None) -> str:
    """A safetensors file with `config` (any JSON value, or a raw string) as its fastseg config."""
    text = config if isinstance(config, str) else json.dumps(config)
    save_file(tensors or {"x": torch.zeros(1)}, str(path), metadata={CONFIG_KEY: text})
    return str(path)


def config(name="lraspp_mobilenet_v3_large", **kwargs):
    return {"format": 1, "name": name, "kwargs": kwargs, "fused": False}


def deep(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


# (what is wrong, the config, the field its error must name)
MALFORMED = [
    ("a list", [1, 2], "(the config)"),
    ("a string", "\"lraspp\"", "(the config)"),
    ("not JSON", "{\"format\": 1,", "(the config)"),
    ("too deep for the JSON parser", "[" * 100_000 + "]" * 100_000, "(the config)"),
    ("an unknown top-level field", {**config(), "extra": 1}, "extra"),
    ("a key with a line break", config(num_classes=2, **{"a\nb" * 50: 1}), "kwargs." + repr("a\nb" * 50)[1:38] + "..."),
    ("another format", {**config(), "format": 2}, "format"),
    ("no format", {k: v for k, v in config().items() if k != "format"}, "format"),
    ("no name", {k: v for k, v in config().items() if k != "name"}, "name"),
    ("a name that is not a string", {**config(), "name": ["lraspp_mobilenet_v3_large"]}, "name"),
    ("an unknown model", config("lraspp_mobilenet_v9"), "name"),
    ("kwargs not an object", {**config(), "kwargs": [21]}, "kwargs"),
    ("fused not a flag", {**config(), "fused": "yes"}, "fused"),
    ("an unknown argument", config(num_classes=2, colour="red"), "kwargs.colour"),
    ("a private argument", config("unet_resnet18", _depth=152), "kwargs._depth"),
    ("a negative size", config(num_classes=-3), "kwargs.num_classes"),
    ("a zero size", config(num_classes=0), "kwargs.num_classes"),
    ("a huge size", config(num_classes=10**30), "kwargs.num_classes"),
    ("a size as a float", config(num_classes=3e7), "kwargs.num_classes"),
    ("a size as a fraction", config(num_classes=2.5), "kwargs.num_classes"),
    ("a size as a string", config(num_classes="21"), "kwargs.num_classes"),
    ("a size as a flag", config(num_classes=True), "kwargs.num_classes"),
    ("a size as a null", config(num_classes=None), "kwargs.num_classes"),
    ("a nested size", config(num_classes=deep(50)), "kwargs.num_classes"),
    ("a nested list", config("deeplabv3_resnet50", atrous_rates=[deep(50), 2, 3]), "kwargs.atrous_rates[0]"),
    ("a list for a number", config(channels=[128]), "kwargs.channels"),
    ("a number for a list", config("deeplabv3_resnet50", atrous_rates=12), "kwargs.atrous_rates"),
    ("a long list", config("deeplabv3_resnet50", atrous_rates=[1] * 1000), "kwargs.atrous_rates"),
    ("a bad choice", config("unet_resnet18", context="max"), "kwargs.context"),
    ("a flag as a number", config("deeplabv3plus_resnet18", separable=1), "kwargs.separable"),
    ("a million blocks", config("segformer_b0", depths=[10**6, 2, 2, 2]), "kwargs.depths[0]"),
    ("a stage list too short", config("segformer", depths=[2, 2, 2]), "kwargs.depths"),
    ("heads that do not divide", config("segformer_b0", num_heads=[3, 2, 5, 8]), "kwargs.num_heads[0]"),
    ("an infinite epsilon", config("segformer", layer_norm_eps=float("inf")), "kwargs.layer_norm_eps"),
    ("sizes its constructor refuses", config("unet_resnet18", decoder_channels=[8] * 6), "kwargs"),
    ("a stride the model lacks", config("deeplabv3_resnet50", output_stride=4), "kwargs"),
]


@pytest.mark.parametrize("what,cfg,field", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_config_is_one_line_naming_file_and_field(tmp_path, what, cfg, field):
    path = write(tmp_path / "bad.safetensors", cfg)
    with pytest.raises(ValueError) as info:
        M.load(path)
    message = str(info.value)
    assert path in message and "\n" not in message, message
    assert f"bad fastseg config: {field} " in message, message
    assert len(message) < 400, message


def test_config_of_a_good_file_passes(tmp_path):
    """Every keyword a factory takes, at its default, is accepted (the check is not too strict)."""
    import inspect

    from fastseg.models.config import check_config
    from fastseg.models.registry import factory

    for name in M.list_models():
        params = {p.name: p.default for p in inspect.signature(factory(name)).parameters.values()
                  if not p.name.startswith("_")}
        kwargs = json.loads(json.dumps(params))  # tuples become lists, as in a saved file
        assert check_config({"format": 1, "name": name, "kwargs": kwargs, "fused": True}, "f") == (name, kwargs, True)


def test_tensors_that_do_not_fit_the_config(tmp_path):
    """Sizes within bounds but not those of the file's tensors: refused by the meta-device comparison."""
    path = write(tmp_path / "classes.safetensors", config(num_classes=60000))
    with pytest.raises(M.WeightsMismatchError, match="classes.safetensors does not fit LRASPP"):
        M.load(path)
    good = tmp_path / "good.safetensors"
    M.save(small_model(), good)
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    key = "head.classifier.weight"
    tensors[key] = tensors[key].to(torch.int32)  # the right shape, not a float
    save_file(tensors, str(tmp_path / "ints.safetensors"), metadata=meta)
    with pytest.raises(M.WeightsMismatchError, match=rf"{key} holds I32"):
        M.load(tmp_path / "ints.safetensors")
    tensors[key] = tensors[key].half()  # another float type is fine: converted on load
    save_file(tensors, str(tmp_path / "half.safetensors"), metadata=meta)
    assert M.load(tmp_path / "half.safetensors").head.classifier.weight.dtype == torch.float32


def test_fused_files_are_checked_against_the_fused_model(tmp_path):
    model = M.fuse(small_model())
    M.save(model, tmp_path / "fused.safetensors")
    loaded = M.load(tmp_path / "fused.safetensors")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_logits(x), model.forward_logits(x))


def foreign_files(tmp_path):
    """(what, path, the words its error must contain) for files that are not fastseg model files."""
    good = tmp_path / "good.safetensors"
    M.save(small_model(), good)
    data = good.read_bytes()
    header = int.from_bytes(data[:8], "little")
    files = {
        "empty": (b"", "too short for the 8-byte header length"),
        "five bytes": (b"\x10\0\0\0\0", "too short for the 8-byte header length"),
        "truncated in the header": (data[: 8 + header // 2], "header claims"),
        "truncated in the tensors": (data[: len(data) - 100], "not a readable safetensors file"),
        "a header length of 2**63": ((2**63).to_bytes(8, "little") + data[8:], "header claims"),
        "a header length one past the end": ((len(data) - 7).to_bytes(8, "little") + data[8:], "header claims"),
        "a header that is not JSON": ((16).to_bytes(8, "little") + b"not json at all!", "not a readable"),
        "tensor offsets past the end": (_lying_offsets(), "not a readable safetensors file"),
        "text": (b"not a model at all, just some text", "not a readable safetensors file"),
    }
    out = []
    for what, (content, words) in files.items():
        path = tmp_path / f"{what.replace(' ', '_')}.safetensors"
        path.write_bytes(content)
        out.append((what, path, words))
    pickled = tmp_path / "pickled.safetensors"
    torch.save(small_model(), pickled)  # a pickle (zip) named like a safetensors file
    out.append(("a pickle", pickled, "not a readable safetensors file"))
    return out


def _lying_offsets() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}}).encode()
    return len(header).to_bytes(8, "little") + header + b"\0" * 16


def test_foreign_and_broken_files(tmp_path):
    for what, path, words in foreign_files(tmp_path):
        with pytest.raises(ValueError) as info:
            M.load(path)
        message = str(info.value)
        assert str(path) in message and words in message, (what, message)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        M.load(tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="without a fastseg config"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
        M.load(tmp_path / "plain.safetensors")


def test_header_larger_than_any_model(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    M.save(small_model(), path)
    monkeypatch.setattr(model_io, "MAX_HEADER", 64)
    with pytest.raises(ValueError, match="more than a model's"):
        M.load(path)


# ---- every hostile file under a memory cap ------------------------------------------------------

CAP = 1 << 30  # bytes of address space the probe may add after its first, good load

# In a fresh process, so that its peaks are the loads', not the test run's. Its address space is
# capped: a file that made `load` allocate what it claims fails with MemoryError (or dies) instead of
# swapping the machine. The peak mark (VmHWM) restarts before each file.
PROBE = textwrap.dedent("""
    import json, resource, sys, time
    import fastseg.models as M

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    M.load(sys.argv[2])  # a good file first: imports and first-use costs are not the hostile files'
    cap = status("VmSize") + int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    results = {}
    for path in sys.argv[3:]:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before, started = status("VmRSS"), time.perf_counter()
        try:
            M.load(path)
            error = None
        except ValueError as exc:
            error = str(exc)
        except MemoryError:
            error = "MemoryError"
        results[path] = {"seconds": time.perf_counter() - started, "peak_bytes": status("VmHWM") - before,
                         "error": error}
    print(json.dumps(results))
""")


def test_hostile_files_are_refused_fast_and_small_under_a_memory_cap(tmp_path):
    good = tmp_path / "good.safetensors"
    M.save(small_model(), good)
    hostile = [str(path) for _, path, _ in foreign_files(tmp_path)]  # truncated, huge header, pickle, ...
    hostile += [
        write(tmp_path / "classes_3e7.safetensors", config(num_classes=3e7)),
        write(tmp_path / "classes_30000000.safetensors", config(num_classes=30_000_000)),
        write(tmp_path / "classes_60000.safetensors", config(num_classes=60_000)),  # within bounds: meta check
        write(tmp_path / "depths_1e6.safetensors", config("segformer_b0", depths=[10**6] * 4)),
        write(tmp_path / "widths.safetensors", config("segformer", hidden_sizes=[60_000] * 4,
                                                      num_heads=[1] * 4, decoder_channels=60_000)),
        write(tmp_path / "nested.safetensors", "[" * 100_000 + "]" * 100_000),
    ]
    assert (tmp_path / "classes_3e7.safetensors").stat().st_size < 300
    run = subprocess.run([sys.executable, "-c", PROBE, str(CAP), str(good), *hostile], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout.splitlines()[-1])
    peak = max(r["peak_bytes"] for r in results.values())
    print(f"\n{len(hostile)} hostile model files, address space capped at +{CAP >> 20} MiB: "
          f"largest resident-set peak +{peak / 2**20:.1f} MiB")
    for path in hostile:
        r = results[path]
        print(f"  {path.rsplit('/', 1)[-1]}: {1e3 * r['seconds']:.0f} ms, peak +{r['peak_bytes'] / 2**20:.1f} MiB")
        assert r["error"] not in (None, "MemoryError") and path in r["error"], (path, r)
        assert r["seconds"] < 2.0 and r["peak_bytes"] < 100 * 2**20, (path, r)


# ---- the command line: one line on stderr, exit status 2 ------------------------------------------

def test_cli_reports_a_bad_model_file_in_one_line(tmp_path, capsys):
    bad = write(tmp_path / "bad.safetensors", config(num_classes=3e7))
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    root = tmp_path / "camvid"  # a one-frame CamVid for eval
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "val" / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "valannot" / "a.png")
    commands = {
        "predict": ["predict", str(image), "--out", str(tmp_path / "out"), "--model", bad],
        "eval": ["eval", "--dataset", "camvid", "--root", str(root), "--model", bad, "--out", str(tmp_path / "ev"),
                 "--no-progress"],
        "export": ["export", bad, "--output", str(tmp_path / "m.onnx")],
    }
    for command, argv in commands.items():
        capsys.readouterr()
        assert main(argv) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, (command, err)
        assert bad in err[0] and "kwargs.num_classes" in err[0] and "Traceback" not in err[0], (command, err)


def test_cli_subprocess_shows_no_traceback(tmp_path):
    bad = write(tmp_path / "bad.safetensors", config("segformer_b0", depths=[10**6] * 4))
    run = subprocess.run([sys.executable, "-m", "fastseg", "export", bad, "-o", str(tmp_path / "m.onnx")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and run.stderr.strip().count("\n") == 0, run.stderr
    assert "kwargs.depths[0]" in run.stderr
