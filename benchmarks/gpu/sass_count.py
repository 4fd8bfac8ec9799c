"""Counting SASS instructions in a cubin: the disassembly parsed, loops found, a hot region measured.

What `sass_report.py` reports for every kernel, and how (the method, in full):

1. **Disassemble** the kernel's cubin with nvdisasm (`disassemble`), keep the one function asked for,
   and parse each instruction line `/*0230*/ @!P0 IMAD.WIDE.U32 R28, ...` into (address, opcode,
   operands). Labels (`.L_x_5:`) give branch targets their addresses.
2. **Find the loops** (`loops`): every branch (BRA) whose target address is at or before its own
   address closes a loop spanning [target, branch]. nvcc and ptxas lay a loop out contiguously, so
   the span holds its body; a span that contains another span is an outer loop. The single
   `BRA` to itself that ends every function (the idle loop after EXIT) is not a loop.
3. **Pick the hot loop** (`hot_region`): each kernel names an *anchor*, the opcode of the work that
   scales with its output (the 4 gathers of a bilinear tap, a histogram's shared-memory atomics,
   tensor-core MMAs). The hot loop is a loop holding anchors none of whose inner loops holds any
   (an inner loop without anchors, e.g. a rare slow path, stays part of it); of several such, the
   one with the most anchors. Without a loop
   holding an anchor, the kernel is straight-line or fully unrolled per program: the region is
   then the whole function (every instruction from its entry to its last EXIT, the helper
   subroutines after it included), which a program's thread runs once.
4. **Count** every instruction in the region except NOPs (alignment padding, never issued). The
   count is static: code under a forward branch inside the loop is counted as if always taken, so
   the figure is an upper bound of what a thread issues, and exact for branch-free bodies.
5. **Divide by the work** that one pass over the region does for one thread: output pixels x
   channels (pixels for the confusion matrix; pixels x output channels x input channels for a
   convolution). Each kernel says how (`sass_kernels.py`): from the anchors in the region (4 gathers
   per pixel and channel, so unrolling by the compiler is seen and divided out), or from the tile
   configuration (BLOCK pixels over num_warps x 32 threads).

The figure is per thread. A warp instruction covers 32 threads, so X instructions per pixel per
channel over P pixels and K channels issue X * P * K / 32 warp instructions, which is what an SM's
schedulers (4 per SM, one warp instruction per cycle each) have to get through.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P[0-7T]\s+)?([A-Z][A-Za-z0-9_.]*)\s*(.*?)\s*;")
_LABEL = re.compile(r"^(\.L_x_\d+|\.L_\w+):")
_TARGET = re.compile(r"`\((\.L_\w+)\)")
_FUNCTION = re.compile(r"^//-+ \.text\.(\S+)\s+-+$")


@dataclass(frozen=True)
class Instr:
    address: int
    opcode: str        # with its modifiers, e.g. "LDG.E.U16"
    operands: str
    predicate: str = ""

    @property
    def base(self) -> str:
        """The opcode without modifiers ("LDG")."""
        return self.opcode.split(".")[0]


@dataclass(frozen=True)
class Region:
    instrs: tuple[Instr, ...]
    kind: str  # "loop" or "function"

    def count(self) -> int:
        return sum(1 for i in self.instrs if i.base != "NOP")

    def anchors(self, pattern: str) -> int:
        rx = re.compile(pattern)
        return sum(1 for i in self.instrs if rx.fullmatch(i.opcode))


def nvdisasm() -> str:
    """nvdisasm: Triton's bundled copy (always there with the Triton that compiles the kernels), else
    the one on PATH or beside nvcc."""
    try:
        import triton.backends.nvidia as nv

        bundled = Path(nv.__file__).parent / "bin" / "nvdisasm"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("nvdisasm")
    if found:
        return found
    nvcc = shutil.which("nvcc")
    if nvcc:
        beside = Path(nvcc).resolve().parent / "nvdisasm"
        if beside.exists():
            return str(beside)
    raise FileNotFoundError("nvdisasm not found (it comes with Triton's NVIDIA backend and with the CUDA toolkit)")


def disassemble(cubin: bytes) -> str:
    with tempfile.TemporaryDirectory(prefix="fastseg-sass-") as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        run = subprocess.run([nvdisasm(), "-c", str(path)], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"nvdisasm failed: {run.stderr[-2000:]}")
    return run.stdout


def functions(sass: str) -> dict[str, str]:
    """{mangled function name: its disassembly text}."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in sass.splitlines():
        m = _FUNCTION.match(line)
        if m:
            current = out.setdefault(m.group(1), [])
        elif line.startswith("//----"):
            current = None
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in out.items()}


def function(sass: str, name_pattern: str) -> str:
    """The one function whose name matches name_pattern (re.search)."""
    found = {n: body for n, body in functions(sass).items() if re.search(name_pattern, n)}
    if len(found) != 1:
        raise LookupError(f"{len(found)} functions match {name_pattern!r}: {sorted(functions(sass))}")
    return next(iter(found.values()))


def parse(text: str) -> tuple[list[Instr], dict[str, int]]:
    """Instructions in address order, and label -> address."""
    instrs: list[Instr] = []
    labels: dict[str, int] = {}
    pending: list[str] = []
    for line in text.splitlines():
        lab = _LABEL.match(line.strip())
        if lab:
            pending.append(lab.group(1))
            continue
        m = _INSTR.match(line)
        if m:
            addr = int(m.group(1), 16)
            for name in pending:
                labels[name] = addr
            pending.clear()
            instrs.append(Instr(addr, m.group(3), m.group(4), (m.group(2) or "").strip()))
    return instrs, labels


def loops(instrs: list[Instr], labels: dict[str, int]) -> list[tuple[int, int]]:
    """(first, last) addresses of every loop: a branch back to an address at or before its own."""
    spans = []
    for i in instrs:
        if i.base != "BRA":
            continue
        m = _TARGET.search(i.operands)
        if not m or m.group(1) not in labels:
            continue
        target = labels[m.group(1)]
        if target < i.address:  # target == address: the idle `BRA self` after EXIT
            spans.append((target, i.address))
    return spans


def hot_region(text: str, anchor: str | None) -> Region:
    """The innermost loop holding the most `anchor` opcodes (a regex matched against the whole opcode
    with modifiers); the whole function when no loop holds one (or anchor is None)."""
    instrs, labels = parse(text)
    if not instrs:
        raise ValueError("no instruction in this function's disassembly")
    best: Region | None = None
    if anchor is not None:
        held = [(lo, hi) for lo, hi in loops(instrs, labels) if _span(instrs, lo, hi).anchors(anchor)]
        for lo, hi in held:
            if any(lo <= a and b <= hi and (a, b) != (lo, hi) for a, b in held):
                continue  # an outer loop: the inner loop holding anchors is measured instead
            region = _span(instrs, lo, hi)
            if best is None or region.anchors(anchor) > best.anchors(anchor):
                best = region
    if best is None:
        last_exit = max(k for k, i in enumerate(instrs) if i.base == "EXIT")
        # the straight line up to the last EXIT, and the subroutines (CALL targets) placed after it
        tail = [i for i in instrs[last_exit + 1:] if not (i.base == "BRA" and _is_self_branch(i, labels))]
        best = Region(tuple(instrs[:last_exit + 1] + tail), "function")
    return best


def _span(instrs: list[Instr], lo: int, hi: int) -> Region:
    return Region(tuple(i for i in instrs if lo <= i.address <= hi), "loop")


def _is_self_branch(i: Instr, labels: dict[str, int]) -> bool:
    m = _TARGET.search(i.operands)
    return bool(m) and labels.get(m.group(1)) == i.address
