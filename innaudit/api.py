"""The Python API: :func:`audit` and :func:`assert_invertible`, for notebooks and pytest suites.

Both take what a researcher has at hand: the model as an object (an ``nn.Module`` with
``forward``/``inverse``, or a flow from FrEIA, nflows, normflows, zuko or pyro), a checkpoint
path or a factory string; data as a tensor, a numpy array, a data SPEC string, or a mapping of
set name -> any of those. Keyword options have the CLI's defaults. Both run the one
orchestration path (:func:`innaudit.run.job.execute`) the CLI runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from innaudit.audits import specs
from innaudit.config.settings import Config, configured
from innaudit.core.errors import UsageError
from innaudit.core.results import ExitCode
from innaudit.report import Report
from innaudit.run.audits import Observer
from innaudit.run.job import Job, execute, named_sets

__all__ = ["assert_invertible", "audit"]


def audit(
    model: Any,
    *,
    data: Any = None,
    ood: Any = None,
    audits: Sequence[str] | None = None,
    skip: Sequence[str] | None = None,
    samples: int | None = None,
    budget: str | float | None = None,
    batch_size: int | str | None = None,
    threads: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    float64_check: bool | None = None,
    fail_on: str | None = None,
    config: Config | Mapping[str, Any] | None = None,
    weights: str | os.PathLike[str] | None = None,
    weights_key: str | None = None,
    trust: bool = False,
    condition: str | None = None,
    observer: Observer | None = None,
) -> Report:
    """Audit a model and return its :class:`~innaudit.core.results.Report`.

    Args:
        model: an ``nn.Module`` with ``forward(x) -> z`` (or ``(z, logdet)``) and ``inverse(z)``,
            a FrEIA / nflows / normflows / zuko / pyro flow, an ``InvertibleModel``, a checkpoint
            path, or a factory string (``file.py:callable``, ``package.module:callable``).
        data: the in-distribution set: a tensor or array (batch first), a SPEC (``digits:test``,
            ``x.npy``), or ``{name: tensor}``. Default: the model's own test set, if it names one.
        ood: held-out sets: a tensor, a SPEC, a list of those, or ``{name: tensor or SPEC}``.
            Default (None): the paper's noise battery (uniform, gaussian, rademacher; for an
            RGB image model also the natural-image sets textures, faces, photos); an empty list
            or mapping: no held-out sets.
        audits: run only these audit ids (``innaudit list``); default all.
        skip: leave these audit ids out.
        samples: at most this many samples per set (default 10000).
        budget: a time budget (``"90s"``, ``"10m"``, ``"1h"`` or seconds): each audit's samples
            are sized to fit and the report records the plan (default: none).
        batch_size: samples per batch, or ``"auto"`` (default: the largest that fits).
        threads: torch's intra-op threads for the run (default: ``OMP_NUM_THREADS``, or a
            ``torch.set_num_threads`` made after importing innaudit, else the faster of 1 and all
            cores, measured); the caller's count is restored on return.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (default cpu).
        seed: the seed of every random draw (default 0); the same seed gives the same report.
        float64_check: repeat round trips in float64 (tells precision loss from ill-conditioning).
        fail_on: ``"fail"`` (default) or ``"warn"``: the least severe status that fails the gate.
        config: a Config, or a mapping in the YAML layout (``innaudit init`` writes one);
            the keyword options above win over it.
        weights, weights_key, trust, condition: as ``innaudit run --weights`` and friends.
        observer: receives progress (see :class:`innaudit.run.audits.Observer`).

    Raises:
        innaudit.core.errors.ConfigError: an option has the wrong type or is out of range
            (``samples=-5``, ``fail_on="sometimes"``, a misspelled audit id), checked as the CLI
            and the YAML loader check it.
        innaudit.core.errors.InnauditError: the model, the data or an option cannot be used (the
            message says what was given, what was expected, and what to do).
    """
    data_specs, arrays = named_sets(data, "data")
    if len(data_specs) > 1:
        raise UsageError(
            f"data= names {len(data_specs)} sets; expected one in-distribution set (pass the others as ood=)"
        )
    ood_specs, ood_arrays = named_sets(ood, "ood")
    overrides = {
        "data": data_specs[0] if data_specs else None,
        "ood": ood_specs or None,
        "audits": list(audits) if audits else None,
        "skip": list(skip) if skip else None,
        "samples": samples,
        "budget": budget,
        "batch_size": batch_size,
        "threads": threads,
        "device": device,
        "seed": seed,
        "float64_check": float64_check,
        "fail_on": fail_on,
        "default_ood": False if ood is not None and not ood_specs else None,
    }
    cfg = configured(config, specs(), overrides)
    job = Job(
        os.fspath(model) if isinstance(model, os.PathLike) else model,
        cfg,
        weights=os.fspath(weights) if weights is not None else None,
        weights_key=weights_key,
        trust=trust,
        condition=condition,
        arrays={**arrays, **ood_arrays},
    )
    return Report.of(execute(job, observer))


def assert_invertible(
    model: Any, *, data: Any = None, ood: Any = None, audits: Sequence[str] | None = None, **options: Any
) -> Report:
    """Audit ``model`` and raise ``AssertionError`` unless it passes its gate; for pytest suites.

    Takes the arguments of :func:`audit`. The message is ``Report.summary()``: every finding as
    ``TAG audit[set] text`` in the console's words (``FAIL roundtrip[far] 100.0 % of 200 round
    trips with a NaN or Inf (limit 0 %)``) and any audit that could not run, so a failing test
    says where the model stopped being invertible. Returns the Report when it passes. pytest
    shows the failure at the caller's line: this frame (whose arguments are the model and the
    data tensors) is hidden from its traceback.
    """
    __tracebackhide__ = True  # pytest: the failure is the caller's assertion, not innaudit's code
    report = audit(model, data=data, ood=ood, audits=audits, **options)
    if report.exit_code is ExitCode.OK:
        return report
    raise AssertionError(report.summary())
