"""``innaudit train --monitor-every`` (timeline in the provenance) and ``innaudit render LOG.jsonl``."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from innaudit.monitor import InvertibilityMonitor, read_log
from innaudit.monitor.training import RecipeMonitor
from innaudit.train import RECIPES, Recipe, run_recipe
from innaudit.train.hooks import step_hook
from innaudit.train.paper_recipes import train
from tests.helpers import invoke_cli

from .models import ScaleCoupling, data, far

TINY = "tiny-checkerboard-additive"


@pytest.fixture
def tiny_recipe(monkeypatch: pytest.MonkeyPatch) -> str:
    """The checkerboard-additive recipe cut to 6 steps of 32 samples (the real training loop)."""
    from innaudit.train import paper_recipes

    setup = dataclasses.replace(
        paper_recipes.Setup(
            "coupling-vector",
            {**paper_recipes.TOY_COUPLING, "coupling": "additive", "steps": 2, "hidden": 8},
            "checkerboard",
            "nll",
            6,
            32,
            2e-3,
        )
    )

    def function(seed, progress=None, steps=None):
        return train(TINY, setup, seed, progress, steps)

    monkeypatch.setitem(RECIPES, TINY, Recipe(TINY, "tiny test recipe", function))
    return TINY


def test_the_hook_checks_every_n_steps_and_leaves_the_weights_as_without_it(tiny_recipe):
    plain = run_recipe(tiny_recipe, seed=0)
    hook = RecipeMonitor(3, samples=16, spectrum_samples=2)
    with step_hook(hook):
        monitored = run_recipe(tiny_recipe, seed=0)
    assert hook.monitor is not None
    assert [r.step for r in hook.monitor.timeline] == [0, 3, 6]
    assert {d.name for d in hook.monitor.datasets} == {"data", "uniform", "gaussian", "rademacher"}
    assert hook.monitor.datasets[0].spec == "checkerboard:test"
    a, b = plain.module.state_dict(), monitored.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_train_records_the_timeline_in_the_provenance(tiny_recipe, tmp_path):
    out, log = tmp_path / "m.pt", tmp_path / "m.jsonl"
    result = invoke_cli("train", tiny_recipe, "-o", out, "--monitor-every", 3, "--monitor-log", log, "--no-progress")
    assert result.code == 0, result.stderr
    provenance = torch.load(out, weights_only=True)["provenance"]
    assert provenance["command"] == f"innaudit train {tiny_recipe} --seed 0 --monitor-every 3 -o PATH"
    timeline = provenance["monitor"]["timeline"]
    assert [c["step"] for c in timeline] == [0, 3, 6] and "duration_s" not in timeline[0]
    assert set(timeline[0]["sets"]) == {"data", "uniform", "gaussian", "rademacher"}
    assert [r["step"] for r in read_log(log) if r["kind"] == "check"] == [0, 3, 6]
    again = tmp_path / "again.pt"
    assert invoke_cli("train", tiny_recipe, "-o", again, "--monitor-every", 3, "--no-progress").code == 0
    assert again.read_bytes() == out.read_bytes()  # no wall time in the provenance
    assert invoke_cli("train", tiny_recipe, "-o", out, "--monitor-log", log).code == 2


def _exploding_log(path) -> None:
    model = ScaleCoupling()
    monitor = InvertibilityMonitor(model, data=data(), ood={"far": far()}, every=1, log=path, on_fail="stop")
    for step in range(9):
        with torch.no_grad():
            model.s.fill_(1.0 if step < 6 else 30.0)
        monitor.step(step)


def test_render_draws_the_timeline_with_the_first_failure_marked(tmp_path):
    log, page = tmp_path / "monitor.jsonl", tmp_path / "t.html"
    _exploding_log(log)
    result = invoke_cli("render", log, "-o", f"html={page}")
    assert result.code == 0, result.stderr
    text = page.read_text()
    assert text.count("<svg") == 3 and "first failing check at step 6" in text
    assert "first failure, step 6" in text  # the marker line's legend
    assert re.search(r"<td>6</td><td>fail</td><td>nonfinite</td><td>far</td>", text)
    second = tmp_path / "t2.html"
    assert invoke_cli("render", log, "-o", f"html={second}").code == 0
    assert second.read_bytes() == page.read_bytes()
    console = invoke_cli("render", log)
    assert console.code == 0 and "9 check(s), steps 0..8; first failing check at step 6" in console.stdout


def test_render_of_a_bad_log_is_one_line_and_exit_2(tmp_path):
    log = tmp_path / "bad.jsonl"
    log.write_text('{"kind": "start"}\nnot json\n{"kind": "check"}\n')
    result = invoke_cli("render", log, "-o", f"html={tmp_path / 'x.html'}")
    assert result.code == 2 and "bad.jsonl:2 is not a JSON object" in result.stderr
    assert not (tmp_path / "x.html").exists()
    good = tmp_path / "good.jsonl"
    _exploding_log(good)
    result = invoke_cli("render", good, "-o", "json")
    assert result.code == 2 and "renders as console or html" in result.stderr
    with good.open("a") as handle:
        handle.write('{"kind": "check", "st')  # a run killed mid-line
    assert len(read_log(good)) == 10
