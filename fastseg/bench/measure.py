"""What one benchmark case produces, and the one way it is timed.

A case checks that fastseg agrees with each reference (an `Agreement`: a named figure and whether it
is within the case's tolerance), then times every candidate round-robin in the same run
(`timing.interleaved_medians`). Each (fastseg candidate, reference) pair is a `Row`; its
claim is the ratio reference / fastseg, never an absolute time. Measurements that are not timings
(peak memory, the mIoU a CRF adds) are `Figure`s."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from .timing import interleaved_medians


@dataclass(frozen=True)
class Agreement:
    """How fastseg's result compares with a reference's. measure is one of "labels equal" (fraction
    of pixels with the same label), "max rel. error" (largest |difference| / largest |reference|) or
    "exact" (1.0 when equal, else 0.0); ok: within the case's tolerance."""
    measure: str
    value: float
    ok: bool
    detail: str = ""

    @classmethod
    def labels(cls, got, expected, minimum: float) -> Agreement:
        a = torch.as_tensor(np.asarray(got)).long()
        b = torch.as_tensor(np.asarray(expected)).long()
        if a.shape != b.shape:
            return cls("labels equal", 0.0, False, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        equal = float((a == b).double().mean())
        return cls("labels equal", equal, equal >= minimum)

    @classmethod
    def close(cls, got: torch.Tensor, expected: torch.Tensor, tolerance: float) -> Agreement:
        err = float((got.double() - expected.double()).abs().max() / expected.double().abs().max())
        return cls("max rel. error", err, err <= tolerance)

    @classmethod
    def exact(cls, equal: bool) -> Agreement:
        return cls("exact", 1.0 if equal else 0.0, bool(equal))

    def requiring(self, condition: bool, detail: str) -> Agreement:
        """The same figure, ok only if condition holds too; detail says what else was checked."""
        return replace(self, ok=self.ok and bool(condition), detail=", ".join(d for d in (self.detail, detail) if d))

    @property
    def text(self) -> str:
        if self.measure == "labels equal":
            words = f"{100 * self.value:.4f} % labels equal"
        elif self.measure == "max rel. error":
            words = f"max rel. error {self.value:.1e}"
        else:
            words = "exactly equal" if self.ok else "RESULTS DIFFER"
        return f"{words}, {self.detail}" if self.detail else words


@dataclass
class Reference:
    """A reference candidate: what to time, how fastseg agrees with it (one Agreement, or one per
    fastseg candidate by name), and optionally the speed-up fastseg's first candidate aims at
    (checked only when FASTSEG_BENCH_STRICT=1 asks for it)."""
    fn: Callable[[], object]
    agreement: Agreement | dict[str, Agreement]
    target: float | None = None


@dataclass
class Row:
    case: str          # what is measured, e.g. "upsample + argmax"
    shape: str
    ours: str          # the fastseg candidate
    reference: str     # what it is timed against
    ours_ms: float     # medians of interleaved rounds
    ref_ms: float
    rounds: int
    agreement: Agreement
    target: float | None = None
    name: str = ""     # the case's name in fastseg.bench.CASES

    @property
    def ratio(self) -> float:
        return self.ref_ms / self.ours_ms

    @property
    def ok(self) -> bool:
        return self.agreement.ok

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "ok": self.ok}

    @classmethod
    def from_dict(cls, d: dict) -> Row:
        fields = {k: d[k] for k in ("case", "shape", "ours", "reference", "ours_ms", "ref_ms", "rounds")}
        return cls(**fields, agreement=Agreement(**d["agreement"]), target=d.get("target"), name=d.get("name", ""))


@dataclass
class Figure:
    """A measurement that is not a timing ratio: values by name, a sentence, and whether its check held."""
    case: str
    shape: str
    text: str
    ok: bool
    values: dict = field(default_factory=dict)
    name: str = ""     # the case's name in fastseg.bench.CASES

    def as_dict(self) -> dict:
        return asdict(self)


def measure(case: str, shape: str, ours: dict[str, Callable[[], object]], references: dict[str, Reference],
            rounds: int, warmup: int = 1, settle: float = 0.0, timer=interleaved_medians) -> list[Row]:
    """One row per (fastseg candidate, reference), all candidates timed interleaved in one run.
    settle: idle seconds after each call, for candidates on other thread pools (interleaved_medians).
    timer: how the interleaved medians are taken (`cuda_timing.event_medians` on a GPU)."""
    candidates = {**{("ours", k): fn for k, fn in ours.items()}, **{("ref", k): r.fn for k, r in references.items()}}
    medians = timer(candidates, rounds, warmup, settle)
    first = next(iter(ours))
    rows = []
    for o in ours:
        for name, r in references.items():
            agreement = r.agreement[o] if isinstance(r.agreement, dict) else r.agreement
            rows.append(Row(case, shape, o, name, 1e3 * medians[("ours", o)], 1e3 * medians[("ref", name)], rounds,
                            agreement, r.target if o == first else None))
    return rows


def dims(shape) -> str:
    return "x".join(str(s) for s in shape)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Low-frequency colour blobs plus a little noise, uint8 [H,W,3]: edges for a CRF or a model to
    follow, unlike white noise."""
    g = generator(seed)
    low = torch.rand((1, 3, max(2, h // 32), max(2, w // 32)), generator=g)
    full = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    full = full + 0.05 * torch.rand(full.shape, generator=g)
    return (full.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()
