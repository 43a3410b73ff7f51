"""The must-show repairs of ``docs/repair.md``, measured: ``python benchmarks/repair.py [NAME ...]``.

Each case repairs a shipped checkpoint (or a user's normflows factory model trained by
``benchmarks/repair_factory.py``) through :func:`innaudit.repair` with seed 0, the audit its
failure shows in, and the default fine-tune, then prints the failing metric before and after,
the price on the held-out split (NLL bits/dim or accuracy), the repair's status and its wall
time. Run it with one thread (``OMP_NUM_THREADS=1``); wall times depend on the machine's load,
the other figures do not (same seed, same bytes).

Cases: ``affine`` (digits-affine, roundtrip on the noise battery), ``deep``
(digits-affine-deep, the attack), ``ms`` (digits-classifier-affine-ms, the memory-saving
gradient), ``factory`` (the 4-coupling normflows RealNVP of ``repair_factory.py``, roundtrip; the repaired
state dict is then loaded back into the factory with and without the clamps and audited),
``factory8`` (the same with 8 couplings).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    """One must-show repair: the model, its audit, and the metric that shows the failure."""

    model: str
    audit: str
    metric: str
    weights: bool = False


CASES = {
    "affine": Case("checkpoints/digits-affine.pt", "roundtrip", "nonfinite_fraction"),
    "deep": Case("checkpoints/digits-affine-deep.pt", "attack", "fraction_above_threshold"),
    "ms": Case("checkpoints/digits-classifier-affine-ms.pt", "gradient", "nonfinite_fraction"),
    "factory": Case("benchmarks/repair_factory.py:small_flow", "roundtrip", "nonfinite_fraction", weights=True),
    "factory8": Case("benchmarks/repair_factory.py:flow", "roundtrip", "nonfinite_fraction", weights=True),
}


def _figures(report, audit: str, metric: str) -> str:
    found = next(a for a in report.audits if a.id == audit)
    return ", ".join(f"{r.dataset} {r.metrics.get(metric, float('nan')):.3g}" for r in found.results)


def run(name: str, folder: Path) -> None:
    """Repair one case and print its figures."""
    import innaudit

    case = CASES[name]
    weights = None
    if case.weights:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from repair_factory import train

        weights = str(folder / "weights.pt")
        torch.save(train(couplings=4 if name == "factory" else 8).state_dict(), weights)
    start = time.perf_counter()
    result = innaudit.repair(
        str(ROOT / case.model),
        data="digits:train",
        audits=[case.audit],
        weights=weights,
        seed=0,
        output=folder / f"{name}-fixed.pt",
    )
    wall = time.perf_counter() - start
    print(
        f"== {name}: {case.model} ({case.audit}) -> {result.status.value}, exit {int(result.exit_code)}, {wall:.0f} s"
    )
    print(f"   plan: {', '.join(result.plan.chosen) or 'none'}")
    print(f"   {case.metric} before: {_figures(result.before, case.audit, case.metric)}")
    if result.after is not None:
        print(f"   {case.metric} after:  {_figures(result.after, case.audit, case.metric)}")
    if result.price is not None:
        p = result.price
        print(f"   {p.metric}: {p.before:.4f} -> {p.after_remedies} (remedies) -> {p.after:.4f} on {p.heldout}")
    for remedy in result.remedies:
        print(f"   {remedy.remedy}: {remedy.outcome.value if remedy.outcome else '-'}")
    for line in result.still_failing:
        print(f"   still FAIL {line}")
    if case.weights:
        _load_back(result, case, folder / f"{name}-fixed.pt")


def _load_back(result, case: Case, fixed: Path) -> None:
    """The repaired state dict in the user's factory with the chosen clamps, audited again."""
    import os

    import innaudit

    clamps = next((r.parameters["clamp"] for r in result.remedies if r.remedy == "bounded-scale"), {})
    path = fixed.with_name("clamps.json")
    path.write_text(json.dumps(clamps), encoding="utf-8")
    os.environ["REPAIR_CLAMPS"] = str(path)
    plain = case.model.rpartition(":")[2]
    for factory in (plain, f"repaired_{plain}"):
        report = innaudit.audit(
            f"{ROOT / 'benchmarks/repair_factory.py'}:{factory}",
            weights=str(fixed),
            data="digits:test",
            audits=["roundtrip"],
            seed=0,
        )
        print(
            f"   {factory} --weights fixed: exit {int(report.exit_code)}, {_figures(report, 'roundtrip', 'nonfinite_fraction')}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", metavar="NAME", help=f"some of {', '.join(CASES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; expected some of {', '.join(CASES)}")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.cases or CASES:
            run(name, Path(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
