"""A benchmark run as data: one JSON results file per run (the machine, the code, every row and
figure), and its rendering as Markdown (the table `fastseg bench` prints and the README's figures,
which tools/readme_figures.py writes from a committed results file)."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

from .measure import Figure, Row

# CPU features that decide which kernels are fast (oneDNN, ONNX Runtime and fastseg's -march=native code)
FEATURE_PREFIXES = ("avx2", "avx512", "amx", "fma")
FEATURE_PARTS = ("vnni", "bf16")


def cpu() -> dict:
    """Model name and the vector / matrix features of this machine's CPU (from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = value.split()
                    break
    except OSError:
        pass
    wanted = sorted(f for f in set(flags) if f.startswith(FEATURE_PREFIXES) or any(p in f for p in FEATURE_PARTS))
    return {"model": model, "flags": wanted, "cores": os.cpu_count()}


def git_commit(folder: Path | None = None) -> dict:
    """The commit the code ran from, and whether tracked files differed from it; None outside a checkout."""
    folder = folder if folder is not None else Path(__file__).resolve().parent

    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return {"commit": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def machine() -> dict:
    import torch

    return {"cpu": cpu(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "load_average": [round(v, 2) for v in os.getloadavg()]}


def results(quick: bool, items: list, seconds: float, started: datetime.datetime, machine_info: dict) -> dict:
    """The results file's content. machine_info is taken at the start (the load average then)."""
    return {"quick": quick, "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"), **git_commit(),
            "machine": machine_info, "seconds": round(seconds, 1),
            "rows": [r.as_dict() for r in items if isinstance(r, Row)],
            "figures": [f.as_dict() for f in items if isinstance(f, Figure)]}


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def write(path: Path, content: dict) -> None:
    from .._atomic import write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(content, indent=1) + "\n")


def load(path: Path) -> tuple[dict, list[Row], list[Figure]]:
    content = json.loads(Path(path).read_text())
    return content, [Row.from_dict(r) for r in content["rows"]], [Figure(**f) for f in content["figures"]]


def header(content: dict) -> str:
    """One line: what ran where (CPU, its features, cores, torch), when, from which commit."""
    m, c = content["machine"], content["machine"]["cpu"]
    commit = (content.get("commit") or "unknown")[:10] + (" + local changes" if content.get("dirty") else "")
    mode = "quick run (small shapes, few rounds)" if content["quick"] else "full run"
    return (f"{mode} on {c['model']} ({c['cores']} cores, {m['torch_threads']} torch threads; "
            f"{' '.join(c['flags']) or 'none of AVX2, AVX-512, AMX'}), torch {m['torch']}, {content['date']}, "
            f"commit {commit}; "
            f"load average {m['load_average'][0]:.2f} at the start")


def markdown(rows: list[Row], figures: list[Figure]) -> str:
    """Rows as a Markdown table (speed-up = reference median / fastseg median, same run,
    interleaved), figures as a list under it."""
    head = ("case", "shape", "fastseg", "reference", "speed-up", "agreement")
    body = [(r.case, r.shape, r.ours, r.reference, f"{r.ratio:.2f}x",
             r.agreement.text + ("" if r.ok else " **(MISMATCH)**")) for r in rows]
    rule = " | ".join("---:" if h == "speed-up" else "---" for h in head)
    lines = ["| " + " | ".join(head) + " |", "| " + rule + " |"] if rows else []
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
    latency = [f for f in figures if "latency_ms" in f.values]
    figures = [f for f in figures if "latency_ms" not in f.values]
    lines += ([""] if lines else []) + [latency_table(latency)] if latency else []
    lines += [""] if figures else []
    lines += [f"- {f.case}, {f.shape}: {f.text}" + ("" if f.ok else " **(CHECK FAILED)**") for f in figures]
    return "\n".join(lines)


def latency_table(figures: list[Figure]) -> str:
    """The stream case's figures as one table: per-frame latency (the Segmenter's time for a frame)
    and frame age (capture to labels) percentiles in ms, throughput, frames dropped by a live source."""
    head = ("stream", "mode", "latency p50 / p95 / p99 / max (ms)", "frame age p50 / p95 / p99 / max (ms)",
            "frames/s", "dropped", "check")
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for f in figures:
        v = f.values
        cells = (f.shape, v["mode"], " / ".join(f"{v['latency_ms'][k]:.0f}" for k in ("p50", "p95", "p99", "max")),
                 " / ".join(f"{v['age_ms'][k]:.0f}" for k in ("p50", "p95", "p99", "max")),
                 f"{v['throughput_fps']:.1f}", f"{v['dropped']} of {v['frames']}",
                 "" if "bound_ms" not in v else
                 f"p99 age <= {v['bound_ms']:.0f} ms: {'yes' if v.get('within_bound', f.ok) else '**NO**'}")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
