"""benchmarks/gpu/sass_report.py's counting method, on SASS whose loop length is known.

A hand-written listing holds the cases the method must get right (nested loops, a loop without the
anchor, NOP padding, the idle branch after EXIT, a straight-line kernel); a PTX kernel with a
`nounroll` loop of K stores, assembled by Triton's ptxas (no GPU needed), must count K + 3 (the
stores, the counter's add, its compare and the branch back). The report itself (`make sass-report`)
runs in CI where nvcc exists.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

GPU_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"
sys.path.insert(0, str(GPU_BENCH))

import sass_count  # noqa: E402
import sass_report  # noqa: E402

LISTING = """\
//--------------------- .text.toy   --------------------------
toy:
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
.L_x_0:
        /*0020*/                   LDG.E.U16 R2, desc[UR4][R4.64] ;
        /*0030*/                   LDG.E.U16 R3, desc[UR4][R6.64] ;
.L_x_1:
        /*0040*/                   IADD3 R8, R8, 0x1, RZ ;
        /*0050*/                   ISETP.GE.AND P1, PT, R8, R9, PT ;
        /*0060*/              @!P1 BRA `(.L_x_1) ;
        /*0070*/                   HADD2 R2, R2, R3 ;
        /*0080*/               @P0 BRA `(.L_x_2) ;
        /*0090*/                   FMUL R2, R2, 0.5 ;
.L_x_2:
        /*00a0*/                   NOP ;
        /*00b0*/                   IADD3 R0, R0, 0x80, RZ ;
        /*00c0*/                   ISETP.LT.AND P2, PT, R0, R10, PT ;
        /*00d0*/               @P2 BRA `(.L_x_0) ;
.L_x_3:
        /*00e0*/                   IADD3 R11, R11, 0x1, RZ ;
        /*00f0*/                   BRA `(.L_x_3) ;
        /*0100*/                   EXIT ;
.L_x_4:
        /*0110*/                   BRA `(.L_x_4);
        /*0120*/                   NOP;
//--------------------- .text.other   --------------------------
other:
        /*0000*/                   EXIT ;
"""


def toy() -> str:
    return sass_count.function(LISTING, r"^toy$")


def test_the_hot_loop_is_the_innermost_loop_holding_the_anchor():
    # loops: [0x20, 0xd0] (holds the loads, and an inner loop without any), [0x40, 0x60], [0xe0, 0xf0]
    instrs, labels = sass_count.parse(toy())
    assert sorted(sass_count.loops(instrs, labels)) == [(0x20, 0xD0), (0x40, 0x60), (0xE0, 0xF0)]
    region = sass_count.hot_region(toy(), r"LDG\..*")
    assert region.kind == "loop"
    assert region.instrs[0].address == 0x20 and region.instrs[-1].address == 0xD0
    assert region.count() == 11  # 12 instructions from 0x20 to 0xd0, the NOP not counted
    assert region.anchors(r"LDG\..*") == 2
    # an anchor only the small inner loop holds: that loop
    assert sass_count.hot_region(toy(), r"ISETP\.GE\..*").count() == 3


def test_without_a_loop_holding_the_anchor_the_whole_function_counts():
    # straight-line or fully unrolled code: the whole function, without the idle `BRA self` after EXIT
    region = sass_count.hot_region(toy(), r"STG\..*")
    assert region.kind == "function"
    assert region.count() == 16  # 0x00..0x100: 17 slots, one a NOP
    assert sass_count.hot_region(toy(), None).count() == 16
    assert sass_count.hot_region(sass_count.function(LISTING, "^other$"), None).count() == 1


def test_function_lookup_names_the_candidates():
    with pytest.raises(LookupError, match="0 functions match"):
        sass_count.function(LISTING, "missing")


def _stores_loop_ptx(k: int) -> str:
    stores = "\n".join(f"  st.global.u32 [%o+{64 * j}], %i;" for j in range(k))
    return f""".version 8.0
.target sm_90
.address_size 64
.visible .entry counted_loop(.param .u64 out, .param .u32 n)
{{
  .reg .pred %p;
  .reg .b32 %i, %n;
  .reg .b64 %o;
  ld.param.u64 %o, [out];
  ld.param.u32 %n, [n];
  mov.u32 %i, 0;
LOOP:
  .pragma "nounroll";
{stores}
  add.u32 %i, %i, 1;
  setp.lt.u32 %p, %i, %n;
  @%p bra LOOP;
  ret;
}}
"""


def _ptxas() -> str:
    try:
        import triton.backends.nvidia as nv
    except ImportError:
        pytest.skip("Triton's NVIDIA backend (which bundles ptxas and nvdisasm) is not installed")
    path = Path(nv.__file__).parent / "bin" / "ptxas"
    if not path.exists():
        found = shutil.which("ptxas")
        if found is None:
            pytest.skip("no ptxas here")
        path = Path(found)
    return str(path)


@pytest.mark.parametrize("k", [1, 4, 8])
def test_a_real_loop_of_known_length_counts_exactly(tmp_path, k):
    ptx = tmp_path / "loop.ptx"
    ptx.write_text(_stores_loop_ptx(k))
    cubin = tmp_path / "loop.cubin"
    run = subprocess.run([_ptxas(), "-arch=sm_90", str(ptx), "-o", str(cubin)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    text = sass_count.function(sass_count.disassemble(cubin.read_bytes()), "^counted_loop$")
    region = sass_count.hot_region(text, r"STG\..*")
    assert region.kind == "loop"
    assert region.anchors(r"STG\..*") == k
    assert region.count() == k + 3, [i.opcode for i in region.instrs]


def test_figures_compare_and_round_trip(tmp_path):
    recorded = {"a.x sm_90": 10.0, "a.x sm_87": 10.0, "b sm_90": 1.0}
    path = tmp_path / "figures.json"
    sass_report.write_figures(recorded, path)
    assert json.loads(path.read_text()) == recorded
    assert "\n\n" in path.read_text()  # families apart: branches changing different kernels merge cleanly
    assert sass_report.compare({"a.x sm_90": 10.4, "a.x sm_87": 9.0, "b sm_90": 1.0}, recorded) == []
    problems = sass_report.compare({"a.x sm_90": 10.6, "a.x sm_87": 10.0, "c sm_90": 3.0}, recorded)
    assert len(problems) == 3
    assert "worse than the recorded 10" in problems[0]
    assert "no recorded figure" in problems[1]
    assert "b sm_90: recorded but no longer reported" in problems[2]
