"""The audit interface, the registry, and the context an audit runs in.

An audit is a small class registered under a stable id. It declares its default thresholds and
options, and its docstring says what property it checks, the formula, the reference, and how to
read a failure (``innaudit explain ID`` prints it). ``run`` yields one :class:`Measurement` per
data set; the runner holds the metrics against the thresholds and builds the results.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch

from innaudit.audits.cost import AuditCost, Cost
from innaudit.audits.passes import SharedPasses
from innaudit.config.settings import AuditSettings, AuditSpec, Threshold
from innaudit.core.distributed import SINGLE, Shard
from innaudit.core.metrics import Direction, Metric, MetricTable, direction_of
from innaudit.core.seeding import generator
from innaudit.data import Dataset
from innaudit.model.contract import InvertibleModel

__all__ = ["REGISTRY", "Audit", "AuditContext", "Measurement", "metric_table", "register", "specs"]

T = TypeVar("T")


@dataclass(frozen=True)
class Measurement:
    """What an audit measured on one set.

    Attributes:
        dataset: the set's name.
        metrics: nested numbers; dotted paths (``error_l2.max``) name them for thresholds.
        message: a sentence for the report.
        series: data for plots, never gated (histograms, curves, per-block lists, grids); see
            :class:`innaudit.core.results.SetResult`.
        artifacts: big arrays for files the CLI may write (attack witnesses), never rendered.
    """

    dataset: str
    metrics: Mapping[str, Any]
    message: str = ""
    series: Mapping[str, Any] = field(default_factory=dict)
    artifacts: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class AuditContext:
    """Everything an audit may use. Audits never print and never touch global RNG state.

    Attributes:
        model: the model under audit.
        datasets: in-distribution first, then OOD sets.
        settings: this audit's thresholds and options.
        seed: this audit's seed, derived from (run seed, audit id).
        samples: the cap on samples per set (``--samples``), also the number of prior draws.
        batch_size: samples per batch.
        device: where tensors go.
        float64_check: whether to repeat measurements in float64.
        latent_shape: shape of one latent ``z`` (from a probe forward pass).
        progress: ``progress(dataset, done, total)`` reports samples processed.
        shard: this process's share of a ``torchrun`` job (:mod:`innaudit.core.distributed`); a
            single process does all the work.
        pace: ``pace(done, total)``, called by :meth:`map` after each work unit: False when the
            run's budget says this audit must stop (the runner's re-plan, :mod:`innaudit.run.pace`).
        overdue: ``overdue()``, asked inside long work (between Lanczos iterations, attack
            steps and restarts): True once this audit is past its budget's deadline; the work
            then stops with what it reached, and the audit reports the cut (never a pass on it).
        left: ``left()``, seconds until this audit's budget deadline (negative once past it,
            ``inf`` without a budget): work that sizes its own sub-batches reads it.
        passes: the run's shared model passes (:mod:`innaudit.audits.passes`): the passes
            ``roundtrip`` ran that ``precision``, ``layers`` and ``logdet`` read again; None
            outside a run (an audit then calls the model itself).
    """

    model: InvertibleModel
    datasets: Sequence[Dataset]
    settings: AuditSettings
    seed: int
    samples: int
    batch_size: int
    device: torch.device
    float64_check: bool
    latent_shape: tuple[int, ...]
    progress: Callable[[str, int, int], None] = field(default=lambda name, done, total: None)
    shard: Shard = field(default_factory=lambda: SINGLE)
    pace: Callable[[int, int], bool] = field(default=lambda done, total: True)
    overdue: Callable[[], bool] = field(default=lambda: False)
    left: Callable[[], float] = field(default=lambda: math.inf)
    passes: SharedPasses | None = None

    def option(self, name: str) -> Any:
        """The effective value of one of the audit's options."""
        return self.settings.options[name]

    def map(self, units: Sequence[Any], work: Callable[[Any], T], paced: bool = False) -> list[T]:
        """``[work(u) for u in units]``, the units shared out over the ranks of a ``torchrun`` job
        and every result handed back in order on every rank. A unit draws its random numbers from
        generators salted with its global position (a batch's start), never with the rank.

        ``paced`` (units made by :func:`innaudit.audits.common.batch_units`, results grouped by
        ``by_set``): in a single process, once :attr:`pace` says stop, the batches left are not
        run, but for the first batch of each set not begun yet, so every set is still measured;
        a batch not run gives None, which ``by_set`` leaves out."""
        if not paced or not self.shard.single:
            return self.shard.map(units, work)
        out: list[Any] = []
        begun: set[Any] = set()
        stopped = False
        for unit in units:
            stopped = stopped or (bool(out) and not self.pace(len(out), len(units)))
            if stopped and unit[0] in begun:
                out.append(None)
                continue
            begun.add(unit[0])
            out.append(work(unit))
        return out

    def generator(self, *salt: object) -> torch.Generator:
        """A fresh generator seeded from this audit's seed and ``salt`` (stable across runs)."""
        return generator(self.seed, *salt)


class Audit(ABC):
    """Base class of every audit. Subclasses set the class variables and implement ``run``."""

    id: ClassVar[str]
    title: ClassVar[str]
    thresholds: ClassVar[Mapping[str, Threshold]] = {}
    options: ClassVar[Mapping[str, Any]] = {}
    metrics: ClassVar[tuple[Metric, ...]] = ()
    """Every metric ``run`` produces, with its direction, unit and whether it is a rate
    (:mod:`innaudit.core.metrics`); a registry test holds the declarations against real runs."""

    scalable: ClassVar[bool] = True
    """Whether a budget may lower the samples per set (False: a fixed grid of points)."""
    shrinkable: ClassVar[Mapping[str, int]] = {}
    """Options a tight budget may lower (iterations, steps), each to at least the given value."""
    batch_cap: ClassVar[Mapping[str, int]] = {}
    """Samples per batch at most, by method (whatever ``--batch-size``): what the planner costs
    the audit's calls at (per-call overheads are paid once per batch)."""

    @classmethod
    def costs(cls, dim: int, options: Mapping[str, Any]) -> Mapping[str, AuditCost]:
        """Model evaluations per sample and per set, by method (``""`` when there is no choice),
        for inputs of dimension ``dim`` (:mod:`innaudit.run.plan`). Default: one round trip."""
        return {"": AuditCost(Cost(forward=1, inverse=1))}

    @classmethod
    def capacities(cls, datasets: Sequence[Dataset], options: Mapping[str, Any], samples: int) -> list[int]:
        """The most samples each set the audit measures can give (default: every data set)."""
        return [min(d.size, samples) for d in datasets]

    @classmethod
    def set_names(cls, datasets: Sequence[Dataset], options: Mapping[str, Any]) -> tuple[str, ...]:
        """The names of the sets the audit may measure, as ``sets:`` in a config names them
        (default: the run's data sets); a name outside them is a typo, refused before the run."""
        del options  # the default depends on the data only
        return tuple(d.name for d in datasets)

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Why this audit does not apply to the model or data (None when it applies)."""
        return None

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Refuse impossible option values (ConfigError) when the config is read, before any
        audit runs; the default accepts every value of the right type."""
        del options  # nothing to check by default

    @abstractmethod
    def run(self, ctx: AuditContext) -> Iterable[Measurement]:
        """Measure, yielding one Measurement per set."""

    @classmethod
    def explain(cls) -> str:
        """The audit's documentation: its docstring, then its default thresholds and options."""
        lines = [f"{cls.id}: {cls.title}", "", inspect.cleandoc(cls.__doc__ or "")]
        if cls.thresholds:
            declared = {m.path: m for m in cls.metrics}
            lines += ["", "Default thresholds:"]
            lines += [f"  {m}: {_limits(t, direction_of(declared, m))}" for m, t in cls.thresholds.items()]
        if cls.options:
            lines += ["", "Options:"] + [f"  {k}: {'null' if v is None else repr(v)}" for k, v in cls.options.items()]
        return "\n".join(lines)


def _limits(threshold: Threshold, direction: Direction) -> str:
    """``warns above 0.0001, fails above 0.01`` (``below`` for a metric better when higher); a
    level that is not set is not named, and a NaN always fails."""
    side = "below" if direction is Direction.HIGHER_BETTER else "above"
    parts = [
        f"{verb} {side} {level:g}"
        for verb, level in (("warns", threshold.warn), ("fails", threshold.fail))
        if level is not None
    ]
    return ", ".join([*parts, "a NaN fails"])


REGISTRY: dict[str, type[Audit]] = {}


def register(cls: type[Audit]) -> type[Audit]:
    """Class decorator: register an audit under its ``id`` (ids are unique and stable)."""
    if cls.id in REGISTRY:
        raise ValueError(f"audit id {cls.id!r} is registered twice")
    REGISTRY[cls.id] = cls
    return cls


def specs() -> dict[str, AuditSpec]:
    """The configuration view of every registered audit, in registry order."""
    return {
        aid: AuditSpec(aid, dict(c.thresholds), dict(c.options), c.metrics, c.check_options)
        for aid, c in REGISTRY.items()
    }


def metric_table() -> MetricTable:
    """``{audit id: {path: Metric}}`` of every registered audit: the one table of directions."""
    return {aid: {m.path: m for m in c.metrics} for aid, c in REGISTRY.items()}
