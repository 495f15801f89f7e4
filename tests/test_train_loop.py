"""The training loop's bookkeeping against hand computations: validation means weighted by
batch, the random state it leaves alone, the step a divergence is reported at, which hooks
run per step, the shuffle each seed gives, and the epochs early stopping keeps and stops at.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from tests.helpers import Recorded
from vaebench import train as train_module
from vaebench.step import StepSettings
from vaebench.train import batch_shapes, train, validate, watched_key


class Plain(Recorded):
    """Not variational: only a loss, no ELBO terms."""

    variational = False

    def loss(self, model, x, step):
        value, _ = super().loss(model, x, step)
        return value, {}


class Noisy(Recorded):
    """Variational, with a loss that draws noise; records the mode the model is in."""

    def __init__(self) -> None:
        self.modes: list[bool] = []

    def loss(self, model, x, step):
        self.modes.append(model.training)
        value = x.flatten(1).sum(1) + torch.rand(()) + 0 * sum(p.sum() for p in model.parameters())
        return value.mean(), {"recon": value, "kl": 0 * value}


class Other(Recorded):
    """Variational with terms that are not the ELBO's: validation asks the model for them."""

    def loss(self, model, x, step):
        value, _ = super().loss(model, x, step)
        return value, {"iwae": value}


class ModelWithTerms(nn.Linear):
    def __init__(self) -> None:
        super().__init__(1, 1)

    def loss_terms(self, x):
        class Terms:
            neg_elbo = 10 * x.flatten(1).sum(1)

        return Terms()


def squares(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32).view(n, 1) ** 2


def test_validate_weights_each_batch_by_its_size(monkeypatch):
    monkeypatch.setattr(train_module, "decode_batch", lambda model, x: 4)  # 4 + 4 + 2
    x = squares(10)
    model = nn.Linear(1, 1).train()
    result = validate(model, Recorded(), x, step=0)
    mean = x.sum().item() / 10  # per example, not per batch (2 batches of 4 and 1 of 2)
    assert result == {"valid_loss": pytest.approx(mean), "valid_neg_elbo": pytest.approx(3 * mean)}
    assert model.training  # back in the mode it came in
    assert validate(model, Plain(), x, step=0) == {"valid_loss": pytest.approx(mean)}
    other = validate(ModelWithTerms(), Other(), x, step=0)
    assert other["valid_neg_elbo"] == pytest.approx(10 * mean)


def test_validate_runs_in_eval_mode_with_its_own_seed():
    x = squares(6)
    objective = Noisy()
    model = nn.Linear(1, 1).train()
    torch.manual_seed(5)
    first = validate(model, objective, x, step=0)
    after = torch.rand(())
    torch.manual_seed(5)
    expected_after = torch.rand(())
    assert after == expected_after  # the caller's random state is left as it was
    torch.manual_seed(99)
    assert validate(model, objective, x, step=0) == first  # the same noise every epoch
    assert set(objective.modes) == {False}
    model.eval()
    validate(model, objective, x, step=0)
    assert not model.training


def test_batch_shapes():
    x = squares(10)
    assert [b.shape[0] for b in batch_shapes(x, 4)] == [4, 2]
    assert [b.shape[0] for b in batch_shapes(x, 5)] == [5, 5]
    assert [b.shape[0] for b in batch_shapes(x, 32)] == [10, 10]


def test_watched_key():
    assert watched_key(Recorded()) == "valid_neg_elbo" and watched_key(Plain()) == "valid_loss"


def test_missing_terms_read_as_nan_and_hooks_run_each_step():
    calls, seen = [], []

    def transform(xb):
        seen.append(xb.shape[0])
        return xb * 0  # what the step sees: the transformed batch

    outcome = train(
        nn.Linear(1, 1),
        squares(10),
        objective=Plain(),
        epochs=1,
        batch_size=4,
        settings=StepSettings(lr=0.1),
        seed=0,
        batch_transform=transform,
        on_step=lambda: calls.append(1),
    )
    assert seen == [4, 4, 2] and len(calls) == 3
    record = outcome.history[0]
    assert record["loss"] == 0.0  # the loss of the transformed batches
    assert math.isnan(record["recon"]) and math.isnan(record["kl"])
    assert outcome.best_epoch == 1 and outcome.status == "ok" and outcome.seconds > 0


class DivergesAt(Recorded):
    def __init__(self, step: int) -> None:
        self.at = step

    def loss(self, model, x, step):
        value, terms = super().loss(model, x, step)
        return (value * math.inf if step + 1 == self.at else value), terms


def test_divergence_names_the_step_and_stops_there():
    started = time.perf_counter()
    outcome = train(
        nn.Linear(1, 1),
        squares(10),
        objective=DivergesAt(5),
        epochs=3,
        batch_size=4,
        settings=StepSettings(lr=0.1),
        seed=0,
    )
    assert outcome.status == "diverged at step 5" and outcome.diverged
    assert outcome.steps == 5 and outcome.epochs_run == 1
    assert 0 < outcome.seconds <= time.perf_counter() - started


def test_each_seed_shuffles_its_own_way():
    orders = {}
    for seed in (0, 1):
        seen = []
        train(
            nn.Linear(1, 1),
            squares(8),
            objective=Recorded(),
            epochs=1,
            batch_size=1,
            settings=StepSettings(lr=0.0),
            seed=seed,
            batch_transform=lambda xb, seen=seen: seen.append(int(xb.item())) or xb,
        )
        orders[seed] = seen
        expected = torch.randperm(8, generator=torch.Generator().manual_seed(seed))
        assert seen == (expected**2).tolist()
    assert orders[0] != orders[1]


class Scripted(Recorded):
    """Validation figures read from a script, one per epoch."""

    def __init__(self, figures: list[float]) -> None:
        self.figures, self.epoch = figures, 0

    def loss(self, model, x, step):
        value, terms = super().loss(model, x, step)
        if not model.training:  # validation
            figure = torch.tensor(self.figures[min(self.epoch, len(self.figures) - 1)])
            return figure, {"recon": figure.expand(x.shape[0]), "kl": 0 * figure.expand(x.shape[0])}
        return value, terms


def run_scripted(figures, *, epochs, patience, monkeypatch):
    objective = Scripted(figures)
    original = train_module.validate

    def validate_and_count(*args):
        result = original(*args)
        objective.epoch += 1
        return result

    monkeypatch.setattr(train_module, "validate", validate_and_count)
    return train(
        nn.Linear(1, 1),
        squares(8),
        objective=objective,
        epochs=epochs,
        batch_size=4,
        settings=StepSettings(lr=0.1),
        seed=0,
        x_valid=squares(3),
        patience=patience,
    )


@pytest.mark.parametrize(
    "figures, epochs, patience, best, run, stopped",
    [
        ([5, 4, 6, 7, 8], 5, 2, 2, 4, True),  # 2 epochs without improvement after the best
        ([5, 4, 6, 3, 8], 5, 2, 4, 5, False),  # improved in time: runs to the end
        ([5, 4, 6, 7, 8], 4, 2, 2, 4, False),  # the last epoch is no early stop
        ([5, 4, 4, 4, 4, 4], 6, 3, 2, 5, True),  # equal is no improvement; stops at 2 + 3
        ([5, 4, 6, 7, 8], 5, 0, 2, 5, False),  # no patience: every epoch
        ([5, 6, 7], 3, 1, 1, 2, True),
    ],
)
def test_early_stopping_by_hand(monkeypatch, figures, epochs, patience, best, run, stopped):
    outcome = run_scripted(figures, epochs=epochs, patience=patience, monkeypatch=monkeypatch)
    assert (outcome.best_epoch, outcome.epochs_run, outcome.stopped_early) == (best, run, stopped)
    assert [r["valid_neg_elbo"] for r in outcome.history] == figures[:run]


class Regress(Plain):
    """A loss with a gradient, so that every step moves the weights."""

    def loss(self, model, x, step):
        return (model(x) - x).pow(2).mean(), {}


def test_the_best_epochs_weights_are_restored(monkeypatch):
    snapshots = {}

    def remember(model, *args):
        snapshots[len(snapshots) + 1] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"valid_loss": [3.0, 1.0, 2.0][len(snapshots) - 1], "valid_neg_elbo": 0.0}

    monkeypatch.setattr(train_module, "validate", remember)
    model = nn.Linear(1, 1)
    outcome = train(
        model, squares(8), objective=Regress(), epochs=3, batch_size=4, settings=StepSettings(lr=0.1), seed=0,
        x_valid=squares(3),
    )  # fmt: skip
    assert outcome.best_epoch == 2
    assert all(torch.equal(v, snapshots[2][k]) for k, v in model.state_dict().items())
    assert not torch.equal(model.weight, snapshots[3]["weight"])


def test_sums_are_float64_so_large_losses_keep_their_digits():
    x = (1e8 + torch.arange(10, dtype=torch.float64)).view(10, 1)  # float32 holds 8 digits
    outcome = train(
        nn.Linear(1, 1),
        x,
        objective=Recorded(),
        epochs=1,
        batch_size=3,
        settings=StepSettings(lr=0.0),
        seed=0,
    )
    assert outcome.history[0]["loss"] == 1e8 + 4.5
    assert outcome.history[0]["kl"] == 2 * (1e8 + 4.5)


def test_without_patience_training_never_stops_early(monkeypatch):
    objective = Scripted([5, 6, 7])
    monkeypatch.setattr(
        train_module,
        "validate",
        lambda *a: {"valid_loss": 0.0, "valid_neg_elbo": objective.figures.pop(0)},
    )
    outcome = train(
        nn.Linear(1, 1), squares(8), objective=objective, epochs=3, batch_size=4, settings=StepSettings(lr=0.1),
        seed=0, x_valid=squares(3),
    )  # fmt: skip
    assert outcome.epochs_run == 3 and not outcome.stopped_early and outcome.best_epoch == 1


def test_a_compiled_mode_compiles_every_shape_the_loop_and_validation_will_see(monkeypatch):
    from vaebench.modes import Mode
    from vaebench.step import TrainStep

    asked = []

    def precompile(self, shapes, eval_shapes=()):
        asked.append(([s.shape[0] for s in shapes], [s.shape[0] for s in eval_shapes]))
        return 1.25

    monkeypatch.setattr(TrainStep, "precompile", precompile)
    model, x_valid = nn.Linear(1, 1), squares(6)
    sized = []
    monkeypatch.setattr(train_module, "decode_batch", lambda m, x: sized.append((m, x)) or 4)
    compiled = Mode(compile="default")
    kwargs = {
        "objective": Plain(),
        "epochs": 1,
        "settings": StepSettings(lr=0.1),
        "seed": 0,
        "mode": compiled,
    }
    outcome = train(model, squares(10), batch_size=4, x_valid=x_valid, **kwargs)
    assert sized[0][0] is model and sized[0][1] is x_valid  # validation's batch, of this model
    assert asked == [([4, 2], [4, 2])] and outcome.compile_seconds == 1.25
    train(nn.Linear(1, 1), squares(10), batch_size=5, **kwargs)
    assert asked[1] == ([5, 5], [])
    train(
        nn.Linear(1, 1),
        squares(10),
        batch_size=5,
        objective=Plain(),
        epochs=1,
        settings=StepSettings(lr=0.1),
        seed=0,
    )
    assert len(asked) == 2  # eager: nothing to compile


class StepsSeen(Recorded):
    def __init__(self) -> None:
        self.valid_steps: list[int] = []

    def loss(self, model, x, step):
        if not model.training:
            self.valid_steps.append(step)
        return super().loss(model, x, step)


def test_validation_sees_the_steps_taken_and_the_clock_is_wall_time():
    objective = StepsSeen()
    started = time.perf_counter()
    outcome = train(
        nn.Linear(1, 1), squares(10), objective=objective, epochs=2, batch_size=4, settings=StepSettings(lr=0.1),
        seed=0, x_valid=squares(3),
    )  # fmt: skip
    assert objective.valid_steps == [3, 6]  # after 3 and 6 steps (the KL warm-up reads it)
    assert 0 < outcome.seconds <= time.perf_counter() - started


def test_validation_time_is_reported_apart_from_training_time(monkeypatch):
    """A validation pass that takes 0.2 s an epoch lands in valid_seconds, not in seconds
    (train time), and the two add up to the wall time."""
    original = train_module.validate

    def slow_validate(*args):
        time.sleep(0.2)
        return original(*args)

    monkeypatch.setattr(train_module, "validate", slow_validate)
    started = time.perf_counter()
    outcome = train(
        nn.Linear(1, 1), squares(8), objective=StepsSeen(), epochs=3, batch_size=4,
        settings=StepSettings(lr=0.1), seed=0, x_valid=squares(3),
    )  # fmt: skip
    wall = time.perf_counter() - started
    assert outcome.valid_seconds >= 0.6
    assert 0 < outcome.seconds < 0.2, "validation leaked into the training time"
    assert outcome.seconds + outcome.valid_seconds <= wall


def test_fp16_trains_through_a_gradient_scaler_for_the_datas_device():
    """fp16 steps go through a GradScaler made for the training data's device (autocast and
    the scaler run on the CPU too): a step built without the device fails on its first update."""
    from tests.helpers import tiny_vae
    from vaebench.modes import Mode
    from vaebench.plugins.objectives import VAEObjective

    model = tiny_vae().train()
    fp16 = Mode(precision="fp16")
    x = torch.rand(8, 1, 3, 4)
    kwargs = {
        "objective": VAEObjective(),
        "epochs": 1,
        "batch_size": 4,
        "settings": StepSettings(lr=1e-3),
        "seed": 0,
    }
    outcome = train(model, x, mode=fp16, **kwargs)
    assert outcome.steps == 2 and outcome.status == "ok"
