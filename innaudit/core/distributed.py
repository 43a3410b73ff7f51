"""Scale-out over ``torch.distributed``: which share of the work is this process's, and exact merges.

Under ``torchrun`` every process (rank) runs the same innaudit run. A :class:`Shard` says which
rank this is; :meth:`Shard.map` runs a list of work units (an audit's batches, each keyed by its
global position) over the ranks and hands every rank all the results in global order, so the
reductions after it (medians, quantiles, maxima, worst indices) are computed on exactly the
values one process would have. Work units draw their random numbers from generators
seeded by their global position, never by the rank, so the results do not depend on the number
of ranks.

Which rank runs which unit is decided as the job goes: rank ``r`` first runs unit ``r``, then
every rank that finishes a unit claims the next one from a counter in the process group's
key-value store (``add``, atomic). A rank slowed by costlier units (an attack start that takes
all its steps, a set whose Jacobians are larger) then takes fewer, where a fixed round-robin
split waits for the slowest rank's share. Where each result was computed never changes it:
a unit depends only on its key.

The gathers use ``all_gather_object`` over a gloo process group (its pickled payloads are padded
to the longest one, so shards of unequal size gather exactly). Every collective carries a step
number and a tag: a rank that skipped a collective is caught at the next one instead of pairing
the wrong payloads. A unit that raises on one rank is gathered as a failure and re-raised on every
rank as :class:`RankFailure` naming the rank, so all ranks give the audit the same ERROR and stay
in step. A collective that times out (``timeout_s``) or loses a peer raises
:class:`~innaudit.core.errors.DistributedError` naming the ranks that did not reach it (each rank writes
its step number to the process group's key-value store before a collective); the run then ends
with exit 2 and makes no further collective call.

A process without ``WORLD_SIZE > 1`` in its environment gets :data:`SINGLE`: ``map`` is a plain
loop in this process and no collective is ever made.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from innaudit.core.errors import DistributedError, clean_text

__all__ = ["DEFAULT_TIMEOUT_S", "SINGLE", "RankFailure", "Shard", "join", "leave", "world_size_of"]

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 600.0
"""Seconds a rank waits for the others at a collective before the job ends with exit 2."""


class RankFailure(Exception):
    """A work unit raised on one rank; raised on every rank so they all record the same error."""


@dataclass
class Shard:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its node).

    ``broken`` is set once a collective failed: later calls make no collective and return this
    rank's own values, so a rank can still write its report and exit.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    broken: bool = False
    _step: int = field(default=0, repr=False)
    _store: Any = field(default=None, repr=False)

    @property
    def single(self) -> bool:
        """Whether the job is this process alone (no collective is ever made)."""
        return self.world_size <= 1

    @property
    def leader(self) -> bool:
        """Rank 0: the rank that renders, writes the reports and decides the exit code."""
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether work unit ``index`` (its global position) is this rank's in a round-robin
        split: the split :meth:`map` uses without a key-value store."""
        return index % self.world_size == self.rank

    def _claims(self, count: int) -> Iterator[int]:
        """The units of the next :meth:`map` (``count`` of them) this rank runs: unit ``rank``,
        then each next unclaimed one from the store's counter for this collective step, until
        none is left; without a store, :meth:`owns`."""
        if self._store is None:
            yield from (i for i in range(count) if self.owns(i))
            return
        if self.rank < count:
            yield self.rank
        key = f"claims/{self._step + 1}"  # the step of map's gather: the same on every rank in step
        while True:
            try:
                index = self.world_size + int(self._store.add(key, 1)) - 1
            except Exception as exc:  # the store is gone: the job cannot share out work
                self.broken = True
                raise DistributedError(
                    f"rank {self.rank} of {self.world_size}: the job's key-value store "
                    f"failed while sharing out work ({clean_text(str(exc), 200)}); no verdict"
                ) from None
            if index >= count:
                return
            yield index

    def map(self, keys: Sequence[Any], work: Callable[[Any], T], tag: str = "") -> list[T]:
        """``[work(k) for k in keys]``, each unit run by one rank, every rank getting all results.

        A unit that raises stops this rank's share; after the gather every rank raises
        :class:`RankFailure` naming the lowest failing rank and its error.
        """
        if self.single:
            return [work(k) for k in keys]
        local: list[tuple[int, T]] = []
        failure: str | None = None
        for index in self._claims(len(keys)):
            try:
                local.append((index, work(keys[index])))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # gathered, then raised on every rank alike
                failure = clean_text(f"{type(exc).__name__}: {exc}", 400)
                break
        parts = self._gather(("map", tag, len(keys)), (failure, local))
        for rank, (failed, _) in enumerate(parts):
            if failed is not None:
                raise RankFailure(f"on rank {rank} of {self.world_size}: {failed}")
        out: list[Any] = [None] * len(keys)
        for _, pairs in parts:
            for index, value in pairs:
                out[index] = value
        return out

    def first(self, value: T, tag: str = "") -> T:
        """Rank 0's ``value`` on every rank (this rank's own once the job is broken)."""
        if self.single or self.broken:
            return value
        return self._gather(("first", tag), value if self.leader else None)[0]

    def agree(self, tag: str) -> None:
        """A checkpoint every rank must reach with the same ``tag`` (a rank out of step fails it)."""
        if not self.single and not self.broken:
            self._gather(("agree", tag), None)

    def statuses(self, value: T, tag: str = "") -> list[T]:
        """Every rank's ``value``, by rank."""
        if self.single or self.broken:
            return [value]
        return self._gather(("statuses", tag), value)

    def _gather(self, tag: tuple[Any, ...], payload: Any) -> list[Any]:
        import torch.distributed as dist

        self._step += 1
        step = self._step
        try:
            if self._store is not None:
                self._store.set(f"step/{self.rank}", str(step))
            out: list[Any] = [None] * self.world_size
            dist.all_gather_object(out, (step, tag, payload))
        except Exception as exc:  # a timeout or a peer gone: the job cannot go on
            self.broken = True
            raise DistributedError(self._absent(step, exc)) from None
        behind = [(r, s, t) for r, (s, t, _) in enumerate(out) if (s, t) != (step, tag)]
        if behind:
            self.broken = True
            text = "; ".join(f"rank {r} at collective {s} {t}" for r, s, t in behind)
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: the ranks fell out of step "
                f"at collective {step} {tag} ({text}); a rank skipped or repeated "
                "work, no verdict"
            )
        return [payload for _, _, payload in out]

    def _absent(self, step: int, exc: BaseException) -> str:
        """Which ranks did not reach collective ``step``, from the steps they wrote to the store."""
        cause = clean_text(f"{type(exc).__name__}: {exc}", 200)
        lead = f"rank {self.rank} of {self.world_size}: collective {step} failed"
        if self._store is None:
            return f"{lead} ({cause})"
        missing = []
        try:
            for rank in range(self.world_size):
                key = f"step/{rank}"
                seen = int(self._store.get(key)) if self._store.check([key]) else 0
                if seen < step:
                    missing.append(
                        f"rank {rank} (last at collective {seen})"
                        if seen
                        else f"rank {rank} (never reached a collective)"
                    )
        except Exception:  # the store itself is gone (it lives with rank 0 without torchrun)
            return f"{lead}: rank 0 or the rendezvous store is gone ({cause})"
        if not missing:
            return f"{lead} ({cause})"
        return f"{lead} within {self.timeout_s:g} s: {', '.join(missing)} crashed or hung; no verdict ({cause})"


SINGLE = Shard()
"""The shard of a process that is the whole job."""


def world_size_of(environ: dict[str, str] | os._Environ[str] | None = None) -> int:
    """``WORLD_SIZE`` as ``torchrun`` sets it (1 when unset)."""
    env = os.environ if environ is None else environ
    try:
        return max(1, int(env.get("WORLD_SIZE", "1")))
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r} is not a number of processes") from None


def join(timeout_s: float = DEFAULT_TIMEOUT_S) -> Shard:
    """This process's shard: :data:`SINGLE`, or a rank of a gloo process group set up from the
    ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``) with collectives that time out after ``timeout_s``."""
    world = world_size_of()
    if world == 1:
        return Shard(timeout_s=timeout_s)
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise DistributedError(
            f"WORLD_SIZE is {world} but RANK is missing or not a number; launch "
            "with torchrun (it sets RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)"
        ) from None
    import torch.distributed as dist

    if not dist.is_available():
        raise DistributedError("this torch is built without torch.distributed; run one process")
    try:
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s), rank=rank, world_size=world)
        store = dist.PrefixStore("innaudit/", dist.distributed_c10d._get_default_store())
    except Exception as exc:
        raise DistributedError(
            f"rank {rank} of {world} could not join the process group: "
            f"{clean_text(f'{type(exc).__name__}: {exc}', 300)}"
        ) from None
    return Shard(rank, world, local_rank, timeout_s, _store=store)


def leave(shard: Shard) -> None:
    """Tear down the process group ``join`` set up (nothing for a single process), after a barrier
    unless the job broke: a rank that tore down its gloo context and the store it may host while a
    peer was still leaving the last collective made one of them abort at exit ("terminate called
    without an active exception", exit -6) after a finished run."""
    if shard.single:
        return
    import torch.distributed as dist

    shard._store = None
    if dist.is_initialized():
        with contextlib.suppress(Exception):  # leaving must not turn a finished run into a crash
            if not shard.broken:
                dist.barrier()
            dist.destroy_process_group()
