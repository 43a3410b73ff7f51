"""The monitor's cost and the paper's story, measured on the zoo's INN classifier recipes.

``python benchmarks/monitor.py overhead [--steps N]``: trains ``digits-classifier-affine`` for N
steps (one thread) with and without an :class:`InvertibilityMonitor` at the default ``every`` and
prints the time ratio, plus the steady-state cost of one check in training steps. Times are the
process's CPU time (one thread), so other load on the machine does not skew the ratio.

``python benchmarks/monitor.py story [--every N] [--spectrum-samples K]``: trains the unregularized
affine classifier and its FD twin with the monitor on and prints each check (data ``sigma_min``,
non-finite shares) and the step where a rule first fired. Logs go to ``monitor-<recipe>.jsonl``
(render them with ``innaudit render monitor-<recipe>.jsonl -o html=PATH``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from innaudit.monitor import DEFAULT_EVERY
from innaudit.monitor.training import RecipeMonitor
from innaudit.train import run_recipe
from innaudit.train.hooks import step_hook

RECIPE = "digits-classifier-affine"


class _Clock:
    """A hook that records the wall time of every training step (the time between two calls)."""

    def __init__(self, inner: RecipeMonitor | None = None) -> None:
        self.inner, self.marks, self.checks = inner, [], []

    def __call__(self, model, domain, steps_done) -> None:
        self.marks.append(time.process_time())
        if self.inner is not None:
            start = time.process_time()
            self.inner(model, domain, steps_done)
            if (
                self.inner.monitor is not None
                and self.inner.monitor.timeline
                and self.inner.monitor.timeline[-1].step == steps_done
            ):
                self.checks.append(time.process_time() - start)
            self.marks[-1] = time.process_time()  # the next step's time starts after the check


def _train(hook: _Clock, steps: int) -> float:
    start = time.process_time()
    with step_hook(hook):
        run_recipe(RECIPE, seed=0, steps=steps)
    return time.process_time() - start


def overhead(steps: int) -> None:
    torch.set_num_threads(1)
    _train(_Clock(RecipeMonitor(DEFAULT_EVERY)), 2)  # one-time costs (imports, data) out of both runs
    plain = _Clock()
    base = _train(plain, steps)
    monitored = _Clock(RecipeMonitor(DEFAULT_EVERY))
    with_monitor = _train(monitored, steps)
    step_s = statistics.median(b - a for a, b in zip(plain.marks, plain.marks[1:], strict=False))
    steady = statistics.median(monitored.checks[1:]) if len(monitored.checks) > 1 else monitored.checks[0]
    print(f"{RECIPE}, {steps} steps, every={DEFAULT_EVERY}, {len(monitored.checks)} checks")
    print(f"total time with / without the monitor: {with_monitor / base:.3f}")
    print(f"first check (imports, warm-up): {monitored.checks[0] / step_s:.1f} training steps")
    print(
        f"steady check: {steady / step_s:.1f} training steps = {steady / step_s / DEFAULT_EVERY:.2%} "
        f"of training at every={DEFAULT_EVERY}"
    )


def story(every: int, spectrum_samples: int, recipes: list[str]) -> None:
    torch.set_num_threads(1)
    for recipe in recipes:
        hook = RecipeMonitor(every, log=f"monitor-{recipe}.jsonl", spectrum_samples=spectrum_samples)
        with step_hook(hook):
            run_recipe(recipe, seed=0)
        assert hook.monitor is not None
        print(f"== {recipe}: first failing check {hook.monitor.first_failure}")
        for r in hook.monitor.timeline:
            sets = r.sets
            nonfinite = {n: s.nonfinite for n, s in sets.items() if s.nonfinite}
            print(
                f"step {r.step:5d} {r.status.value:4s} data sigma_min {sets['data'].sigma_min:.3g} "
                f"rel_error {sets['data'].rel_error:.3g} nonfinite {nonfinite or 0}"
                + "".join(f"\n    {f.message}" for f in r.findings if f.first)
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["overhead", "story"])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--spectrum-samples", type=int, default=32)
    parser.add_argument("--recipe", action="append", default=None)
    args = parser.parse_args()
    if args.what == "overhead":
        overhead(args.steps)
    else:
        story(args.every, args.spectrum_samples, args.recipe or [RECIPE, f"{RECIPE}-fd"])


if __name__ == "__main__":
    main()
