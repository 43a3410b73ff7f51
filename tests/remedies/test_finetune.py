"""The repair's fine-tune: deterministic, skips non-finite steps, keeps the best validated weights."""

from __future__ import annotations

import pytest
import torch

from innaudit.core.errors import UsageError
from innaudit.remedies.bounded_scale import bound_scales
from innaudit.remedies.fd import FDSettings
from innaudit.remedies.finetune import FineTuneSettings, Validation, fine_tune
from innaudit.remedies.objective import CE, NLL, Objective, objective_of

from . import models

NLL_OBJECTIVE = Objective(NLL, "test")


def bounded() -> torch.nn.Module:
    flow = models.overflow_flow()
    bound_scales(flow, {"blocks.1": 12.0})
    return flow


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


TRAIN = torch.from_numpy(models.train_data(200))


def test_the_same_seed_gives_bitwise_the_same_weights_and_another_seed_others() -> None:
    settings = FineTuneSettings(steps=12, lr=1e-3, batch_size=32, fd=FDSettings())
    runs = []
    for seed in (0, 0, 1):
        flow = bounded()
        fine_tune(models.as_model(flow), NLL_OBJECTIVE, TRAIN, None, settings, seed)
        runs.append(state(flow))
    assert same(runs[0], runs[1]) and not same(runs[0], runs[2])


def test_the_fd_term_changes_the_update() -> None:
    results = []
    for fd in (None, FDSettings(coeff=1.0, inverse_coeff=1.0)):
        flow = bounded()
        fine_tune(models.as_model(flow), NLL_OBJECTIVE, TRAIN, None, FineTuneSettings(steps=3, every=1, fd=fd), 0)
        results.append(state(flow))
    assert not same(*results)


def test_non_finite_steps_are_skipped_and_counted() -> None:
    flow = models.overflow_flow()  # unbounded: x1 = 1 gives exp(190) = inf
    before = state(flow)
    far = torch.tensor([[0.5, 1.0]]).repeat(50, 1)
    result = fine_tune(models.as_model(flow), NLL_OBJECTIVE, far, None, FineTuneSettings(steps=5, batch_size=8), 0)
    assert (result.steps_done, result.skipped_nonfinite) == (5, 5) and same(before, state(flow))
    assert (result.regularized, result.skipped_regularized) == (0, 0)  # no regularizer in the settings
    settings = FineTuneSettings(steps=5, batch_size=8, every=2, fd=FDSettings())
    result = fine_tune(models.as_model(flow), NLL_OBJECTIVE, far, None, settings, 0)
    assert (result.regularized, result.skipped_regularized) == (3, 3)  # steps 0, 2, 4: the FD term never acted


def test_regularized_steps_on_finite_data_are_counted_and_not_skipped() -> None:
    settings = FineTuneSettings(steps=4, batch_size=16, every=2, fd=FDSettings())
    result = fine_tune(models.as_model(bounded()), NLL_OBJECTIVE, TRAIN, None, settings, 0)
    assert (result.regularized, result.skipped_regularized, result.skipped_nonfinite) == (2, 0, 0)


def test_a_fine_tune_that_only_hurts_keeps_the_weights_it_started_from() -> None:
    flow = bounded()
    fine_tune(models.as_model(flow), NLL_OBJECTIVE, TRAIN, None, FineTuneSettings(steps=150, lr=1e-2), 0)
    before = state(flow)  # fitted; Adam steps of 200 per weight throw it far off
    calls: list[int] = []
    valid = Validation(TRAIN[:100], None, every=2, first=0)
    settings = FineTuneSettings(steps=6, lr=200.0)
    result = fine_tune(models.as_model(flow), NLL_OBJECTIVE, TRAIN, None, settings, 0, calls.append, None, valid)
    assert calls == list(range(7)) and [s for s, _ in result.validation] == [0, 2, 4, 6]
    start, *later = [v for _, v in result.validation]
    assert all(v > start for v in later) and result.kept_step == 0 and same(before, state(flow))


def test_with_a_regularizer_step_zero_is_not_eligible() -> None:
    flow = bounded()
    valid = Validation(TRAIN[:50], None, every=2, first=1)
    settings = FineTuneSettings(steps=4, lr=5.0, fd=FDSettings())
    result = fine_tune(models.as_model(flow), NLL_OBJECTIVE, TRAIN, None, settings, 0, None, None, valid)
    assert result.kept_step in (2, 4)


def test_a_classifier_needs_labels_and_an_unknown_objective_cannot_train() -> None:
    model = models.as_model(bounded())
    with pytest.raises(UsageError, match="labels"):
        fine_tune(model, Objective(CE, "test"), TRAIN, None, FineTuneSettings(steps=1), 0)
    with pytest.raises(UsageError, match="objective"):
        fine_tune(model, Objective(None, "no objective"), TRAIN, None, FineTuneSettings(steps=1), 0)
    with pytest.raises(UsageError, match="learning rate"):
        fine_tune(model, NLL_OBJECTIVE, TRAIN, None, FineTuneSettings(steps=1, lr=0.0), 0)


def test_the_objective_is_read_from_the_model() -> None:
    assert objective_of(models.as_model(bounded())).kind == NLL  # exact log-det
    from innaudit.zoo.classifier import CouplingClassifier

    classifier = CouplingClassifier(shape=(1, 2, 2), steps=1, hidden=4, classes=2)
    from innaudit.core.domain import DataDomain
    from innaudit.loading.adapt import adapt_module

    adapted = adapt_module(classifier, DataDomain(shape=(1, 2, 2)), {}, "coupling-classifier")
    assert objective_of(adapted).kind == CE
