"""fastseg against the references users would otherwise run: the rows of `fastseg bench`.

Each case sets up one op or model with its references, checks that they agree (the check is shown
in the row and a disagreement fails the command) and times fastseg and every reference round-robin
in the same run (`fastseg._timing.interleaved_medians`). The claim is the ratio reference / fastseg;
absolute times on a shared machine mean little. `quick` picks small shapes and few rounds.

    from fastseg.bench import CASES, run_cases
    rows = run_cases(quick=True)            # list of Row
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from .._timing import interleaved_medians


@dataclass
class Row:
    case: str          # what is measured, e.g. "upsample + argmax"
    shape: str
    reference: str     # what fastseg is timed against
    ref_ms: float
    ours_ms: float
    agreement: str     # how the results compare, in words
    ok: bool           # the results agree within the case's tolerance

    @property
    def ratio(self) -> float:
        return self.ref_ms / self.ours_ms

    def as_dict(self) -> dict:
        return {**asdict(self), "speedup": self.ratio}


@dataclass
class Reference:
    fn: Callable[[], object]
    agreement: str
    ok: bool


def measure(case: str, shape: str, ours: Callable[[], object], references: dict[str, Reference],
            rounds: int, warmup: int = 1, settle: float = 0.0) -> list[Row]:
    """One row per reference, all timed interleaved with `ours` in one run (settle: see
    interleaved_medians; the model cases use it, since fastseg's model stage runs on ONNX Runtime)."""
    medians = interleaved_medians({"\0ours": ours, **{k: r.fn for k, r in references.items()}}, rounds, warmup,
                                  settle)
    return [Row(case, shape, name, 1e3 * medians[name], 1e3 * medians["\0ours"], r.agreement, r.ok)
            for name, r in references.items()]


def _cases() -> dict[str, Callable[[bool], list[Row]]]:
    from . import models, ops

    return {"upsample_argmax": ops.upsample_argmax_case, "confusion_matrix": ops.confusion_matrix_case,
            "crf": ops.crf_case, "atrous_conv": ops.atrous_conv_case,
            "default_model": models.default_model_case, "lraspp": models.lraspp_case}


CASES = ("upsample_argmax", "confusion_matrix", "crf", "atrous_conv", "default_model", "lraspp")
OP_CASES = CASES[:4]


def run_cases(quick: bool = False, names=CASES, progress: bool = True, **options) -> list[Row]:
    """The rows of the named cases, in order. options go to the cases that take them (model=)."""
    from tqdm import tqdm

    table = _cases()
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown bench case(s) {unknown}; known: {list(CASES)}")
    rows: list[Row] = []
    bar = tqdm(names, desc="bench", unit="case", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        fn = table[name]
        kwargs = {k: v for k, v in options.items() if k in fn.__code__.co_varnames}
        rows.extend(fn(quick, **kwargs))
    return rows


def format_table(rows: list[Row]) -> str:
    """Aligned plain-text table (also valid Markdown)."""
    head = ("case", "shape", "reference", "ref ms", "fastseg ms", "speed-up", "agreement")
    body = [(r.case, r.shape, r.reference, f"{r.ref_ms:.2f}", f"{r.ours_ms:.2f}", f"{r.ratio:.2f}x",
             r.agreement + ("" if r.ok else "  ** MISMATCH **")) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    numeric = {3, 4, 5}

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in numeric else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i in numeric else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), rule, *map(line, body)])
