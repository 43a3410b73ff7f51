"""The monitor's audit battery: fixed small sets, a small config, and one call into the runner.

The monitor measures with the library's own audits (``roundtrip``, ``spectrum``) through the same
orchestration as ``innaudit run``: :func:`run_battery` is the single place that calls it. The sets
are built once, when the monitor is made, from tensors or data SPECs, so every check sees the same
samples and two checks differ only because the parameters moved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from innaudit.config.settings import Config, parse_config
from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError
from innaudit.core.results import Report, Status
from innaudit.data import Dataset, Role, resolve_dataset
from innaudit.model.contract import InvertibleModel

__all__ = ["SetFigures", "battery_config", "figures", "fixed_set", "make_sets", "run_battery"]

DataArg = Tensor | Dataset | str
"""A set as the monitor takes it: a tensor of samples, a :class:`Dataset`, or a data SPEC."""


def fixed_set(name: str, data: DataArg, role: Role, domain: DataDomain, samples: int, seed: int) -> Dataset:
    """A :class:`Dataset` of at most ``samples`` fixed samples, materialized once (a CPU copy).

    Raises:
        DataError: the tensor's samples do not have the model's input size, or hold NaN/Inf.
    """
    if isinstance(data, str):
        source = resolve_dataset(data if "=" in data else f"{name}={data}", role, domain, samples, seed)
    elif isinstance(data, Dataset):
        source = data
    else:
        source = _tensor_set(name, data, role, domain)
    values = source.first(samples).detach().to("cpu", torch.float32).clone()
    values = values.reshape(len(values), *domain.shape)
    if not torch.isfinite(values).all():
        raise DataError(f"monitor set {source.name!r} holds NaN/Inf values; expected finite inputs")

    def make(start: int, stop: int) -> Tensor:
        return values[start:stop]

    return Dataset(source.name, source.spec, role, len(values), make, source.note)


def _tensor_set(name: str, data: Tensor, role: Role, domain: DataDomain) -> Dataset:
    if not isinstance(data, Tensor) or data.dim() < 1 or len(data) == 0:
        raise DataError(
            f"monitor set {name!r} is {type(data).__name__}; expected a non-empty tensor "
            "of samples (batch first), a Dataset or a data SPEC"
        )
    if data[0].numel() != domain.numel:
        raise DataError(
            f"monitor set {name!r} has samples of shape {tuple(data.shape[1:])}, but the "
            f"model takes {tuple(domain.shape)}; expected {domain.numel} values per sample"
        )
    return Dataset(name, "tensor", role, len(data), lambda a, b: data[a:b])


def make_sets(
    data: DataArg | None, ood: Mapping[str, DataArg] | Sequence[str], domain: DataDomain, samples: int, seed: int
) -> tuple[Dataset, ...]:
    """The in-distribution set (named ``data``) first, then the OOD sets, each fixed once."""
    sets = [fixed_set("data", data, Role.IN_DISTRIBUTION, domain, samples, seed)] if data is not None else []
    items = ood.items() if isinstance(ood, Mapping) else [(str(s).split("=")[0], s) for s in ood]
    for name, value in items:
        sets.append(fixed_set(name, value, Role.OOD, domain, samples, seed))
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise DataError(f"monitor set names {names} repeat; name them apart")
    return tuple(sets)


def battery_config(
    audits: Sequence[str],
    samples: int,
    spectrum_samples: int,
    seed: int,
    device: str = "cpu",
    spectrum_method: str = "auto",
) -> Config:
    """The run configuration of one check: only ``audits``, small sets, one batch per set."""
    from innaudit.audits import specs

    raw: dict[str, Any] = {
        "audits": list(audits),
        "samples": samples,
        "batch_size": samples,
        "seed": seed,
        "device": device,
    }
    if "spectrum" in audits:
        raw["spectrum"] = {"samples": spectrum_samples, "method": spectrum_method}
    return parse_config(raw, specs())


def run_battery(
    model: InvertibleModel,
    datasets: Sequence[Dataset],
    config: Config,
    latent_shape: tuple[int, ...],
    spectrum_sets: Sequence[str] | None = None,
) -> list[Report]:
    """Run the battery through the library's audit path (the one place that calls the orchestration).

    ``spectrum_sets`` (None: all) names the sets the Jacobian audit runs on; the round trips run
    on every set. Returns one report per group of sets.
    """
    from innaudit.run.audits import Subject, run_audits

    target = {"model": "monitored model", "loader": "monitor"}
    if spectrum_sets is None or "spectrum" not in config.audits:
        return [run_audits(Subject(model, datasets, config, latent_shape), target=target)]
    others = tuple(a for a in config.audits if a != "spectrum")
    chosen = [d for d in datasets if d.name in spectrum_sets]
    reports = (
        [run_audits(Subject(model, chosen, replace(config, audits=("spectrum",)), latent_shape), target=target)]
        if chosen
        else []
    )
    if others:
        reports.append(
            run_audits(Subject(model, datasets, replace(config, audits=others), latent_shape), target=target)
        )
    return reports


@dataclass(frozen=True)
class SetFigures:
    """The few numbers a check keeps per set (NaN where an audit did not measure them).

    Attributes:
        nonfinite: share of round trips with a NaN or Inf (``roundtrip.nonfinite_fraction``).
        rel_error: worst relative round-trip error over finite samples (``rel_error_l2.max``).
        sigma_min: smallest ``sigma_min(J_F)`` over the spectrum samples (``forward.sv_min.min``).
        sigma_max: largest ``sigma_max(J_F)`` (``forward.sv_max.max``).
        jacobian_nonfinite: share of spectrum samples with a non-finite Jacobian.
    """

    nonfinite: float = math.nan
    rel_error: float = math.nan
    sigma_min: float = math.nan
    sigma_max: float = math.nan
    jacobian_nonfinite: float = math.nan

    def to_dict(self) -> dict[str, float]:
        """Plain numbers by name."""
        return {
            "nonfinite": self.nonfinite,
            "rel_error": self.rel_error,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "jacobian_nonfinite": self.jacobian_nonfinite,
        }


def _number(tree: Mapping[str, Any], path: str) -> float:
    node: Any = tree
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return math.nan
        node = node[key]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else math.nan


def figures(reports: Sequence[Report]) -> tuple[dict[str, SetFigures], list[str]]:
    """Per-set figures from the battery's reports, and the messages of audits that crashed."""
    found: dict[str, dict[str, float]] = {}
    audits = [a for r in reports for a in r.audits]
    errors = [f"{a.id}: {a.message}" for a in audits if a.status is Status.ERROR]
    for audit in audits:
        for result in audit.results:
            slot = found.setdefault(result.dataset, {})
            if audit.id == "roundtrip":
                slot["nonfinite"] = _number(result.metrics, "nonfinite_fraction")
                slot["rel_error"] = _number(result.metrics, "rel_error_l2.max")
            elif audit.id == "spectrum":
                slot["sigma_min"] = _number(result.metrics, "forward.sv_min.min")
                slot["sigma_max"] = _number(result.metrics, "forward.sv_max.max")
                slot["jacobian_nonfinite"] = _number(result.metrics, "nonfinite_fraction")
    return {name: SetFigures(**values) for name, values in found.items()}, errors
