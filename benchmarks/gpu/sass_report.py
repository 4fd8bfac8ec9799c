"""`make sass-report`: SASS instructions per unit of work of every GPU kernel, without a GPU.

Compiles every kernel of sass_kernels.KERNELS (the Triton kernels with the tile configuration their
launchers use on a GPU, the CUDA C++ kernels with the build's nvcc options) for sm_90 (H100) and
sm_87 (Jetson Orin), disassembles the cubin, and prints one line per kernel and architecture:

    upsample_argmax.triton sm_90: 30.5 SASS instructions per output pixel per channel

counted from the kernel's hot loop as sass_count.py explains (innermost loop holding the kernel's
anchor opcode, instructions counted statically, divided by the pixels x channels one pass of one
thread handles). Per thread: X per pixel per channel over P pixels and K channels issue
X * P * K / 32 warp instructions.

Then it compares with the recorded figures (sass_figures.json) and exits non-zero when a kernel got
worse than its figure by more than TOLERANCE, when a recorded kernel is gone, or when a kernel has no
figure yet. `--update` records the figures of this run instead. `--show NAME` prints the counted
region's SASS. main() unsets TRITON_INTERPRET before Triton is imported (it decides then whether it
interprets), so run it as a program, not from a process that has imported Triton.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from sass_count import disassemble, function, hot_region  # noqa: E402
from sass_kernels import KERNELS, Kernel  # noqa: E402

ARCHS = (90, 87)
FIGURES = HERE / "sass_figures.json"
TOLERANCE = 0.05  # relative: a kernel may get 5 % worse before the report fails


def measure(kernel: Kernel, arch: int, show: bool = False) -> float:
    """SASS instructions per unit of work of `kernel` on sm_<arch>."""
    cubin, name = kernel.build(arch)
    region = hot_region(function(disassemble(cubin), name), kernel.anchor)
    units = kernel.work(region)
    if units <= 0:
        raise ValueError(f"{kernel.name} sm_{arch}: the counted {region.kind} does no work by its rule")
    if show:
        for i in region.instrs:
            print(f"  /*{i.address:04x}*/ {i.predicate:5} {i.opcode} {i.operands}")
        print(f"  {region.kind}: {region.count()} instructions / {units:g} units")
    return region.count() / units


def key(kernel: Kernel, arch: int) -> str:
    return f"{kernel.name} sm_{arch}"


def write_figures(figures: dict[str, float], path: Path = FIGURES) -> None:
    """One line per figure, sorted, kernel families apart (a blank line between them) so that
    branches changing different kernels merge without conflict."""
    lines, family = [], None
    for k in sorted(figures):
        fam = k.split(".")[0]
        if family is not None and fam != family:
            lines.append("")
        family = fam
        lines.append(f"  {json.dumps(k)}: {figures[k]},")
    text = "{\n" + "\n".join(lines).rstrip(",") + "\n}\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def compare(got: dict[str, float], recorded: dict[str, float]) -> list[str]:
    """The problems: worse than recorded beyond TOLERANCE, a recorded kernel gone, a new one unrecorded."""
    problems = []
    for k, value in got.items():
        if k not in recorded:
            problems.append(f"{k}: no recorded figure (run `python benchmarks/gpu/sass_report.py --update`)")
        elif value > recorded[k] * (1 + TOLERANCE):
            problems.append(f"{k}: {value:.4g} is worse than the recorded {recorded[k]:.4g} "
                            f"(more than {TOLERANCE:.0%}); make it fast again, or record it with --update and say why")
    for k in recorded:
        if k not in got:
            problems.append(f"{k}: recorded but no longer reported (a kernel disappeared from sass_kernels.py)")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true", help="record this run's figures in sass_figures.json")
    ap.add_argument("--show", metavar="NAME", help="print the counted SASS region of the kernels named NAME")
    ap.add_argument("--only", metavar="NAME", help="measure only the kernels whose name contains NAME (no check)")
    args = ap.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)  # before anything imports triton: compile, never interpret
    selected = [k for k in KERNELS if args.only is None or args.only in k.name]
    got: dict[str, float] = {}
    for kernel in selected:
        for arch in ARCHS:
            value = measure(kernel, arch, show=args.show is not None and args.show in kernel.name)
            got[key(kernel, arch)] = round(value, 4)
            print(f"{kernel.name} sm_{arch}: {value:.3g} SASS instructions {kernel.unit}", flush=True)
    if args.only is not None:
        return 0
    if args.update:
        write_figures(got)
        print(f"recorded {len(got)} figures in {FIGURES.relative_to(HERE.parents[1])}")
        return 0
    recorded = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    problems = compare(got, recorded)
    for p in problems:
        print(f"sass-report: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
