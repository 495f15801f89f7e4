"""The training loop: the optimizer on the objective, validation after every epoch, early stopping on
the validation split with the best epoch's weights restored, and a stop the step a model
diverges. The test split never reaches this module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaebench.io import atomic_torch_save
from vaebench.metrics import decode_batch
from vaebench.model import VAE, Objective
from vaebench.modes import EAGER, Mode
from vaebench.step import (
    DEFAULTS,
    StepSettings,
    TrainStep,
    build_schedule,
    build_step,
    reads_metric,
)

HISTORY_KEYS = ("loss", "recon", "kl")
VALID_SEED = 12345  # the same noise every epoch, so validation curves compare epochs, not draws


@dataclass
class TrainOutcome:
    """What training produced: per-epoch means, steps taken, the epoch kept, a status."""

    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    status: str = "ok"
    seconds: float = 0.0  # training steps only: validation and compiling are apart
    valid_seconds: float = 0.0  # the per-epoch validation passes
    best_epoch: int | None = None  # the epoch whose weights the model holds at the end
    stopped_early: bool = False
    compile_seconds: float = 0.0  # spent compiling before the first step (not in ``seconds``)

    @property
    def diverged(self) -> bool:
        return self.status != "ok"

    @property
    def epochs_run(self) -> int:
        return len(self.history)


@torch.no_grad()
def validate(
    model: VAE, objective: Objective, x_valid: torch.Tensor, step: int
) -> dict[str, float]:
    """Validation means: the objective's loss and, for the VAE family, the negative ELBO.

    Runs in eval mode under a fixed seed (the caller's random state is left untouched).
    """
    was_training = model.training
    model.eval()
    devices = [x_valid.device] if x_valid.device.type == "cuda" else []
    loss_sum = elbo_sum = 0.0
    batch = decode_batch(model, x_valid)  # no gradients: larger than a training batch
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(VALID_SEED)
        for start in range(0, x_valid.shape[0], batch):
            xb = x_valid[start : start + batch]
            loss, terms = objective.loss(model, xb, step)
            loss_sum += loss.double().item() * xb.shape[0]
            if objective.variational:
                if "recon" in terms and "kl" in terms:  # the unweighted ELBO terms: reuse them
                    neg_elbo = terms["recon"] + terms["kl"]
                else:  # an objective with other terms (iwae): one more pass
                    neg_elbo = model.loss_terms(xb).neg_elbo
                elbo_sum += neg_elbo.double().sum().item()
    model.train(was_training)
    n = x_valid.shape[0]
    result = {"valid_loss": loss_sum / n}
    if objective.variational:
        result["valid_neg_elbo"] = elbo_sum / n
    return result


def batch_shapes(x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """A full batch of ``x`` and its short last batch (the same when none is short)."""
    n = x.shape[0]
    return [x[: min(batch_size, n)], x[: n % batch_size or batch_size]]


def watched_key(objective: Objective) -> str:
    """What early stopping and the best epoch are judged on."""
    return "valid_neg_elbo" if objective.variational else "valid_loss"


@dataclass
class _Progress:
    """What the loop carries from epoch to epoch besides the weights and the optimizer."""

    best_value: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None


def train(
    model: VAE,
    x_train: torch.Tensor,
    *,
    objective: Objective,
    epochs: int,
    batch_size: int,
    settings: StepSettings = DEFAULTS,
    seed: int,
    x_valid: torch.Tensor | None = None,
    patience: int = 0,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_step: Callable[[], None] | None = None,
    mode: Mode = EAGER,
    state_path: Path | None = None,
) -> TrainOutcome:
    """Train in place on ``objective`` for at most ``epochs`` epochs.

    With ``x_valid``, every epoch ends with a validation pass; the weights of the epoch with
    the lowest validation figure (``watched_key``) are restored at the end, and ``patience``
    > 0 stops training after that many epochs without improvement. ``batch_transform`` maps
    each training batch before its step (dynamic binarization draws a fresh sample there).
    ``settings`` build the optimizer, step and learning-rate schedule (``vaebench.step``),
    the same step timing uses; the schedule steps once per epoch and each epoch's rate is in
    the history. A NaN or infinite loss stops with ``diverged at step N``. ``mode`` sets
    precision, compilation and CUDA graphs (``vaebench.modes``); compiling happens before the
    clock starts and is reported as ``compile_seconds``.

    ``state_path``: after every epoch the whole training state (weights, optimizer, schedule,
    gradient scaler, random states, history, best epoch) is written there atomically, and a
    state found there at the start is continued from, so an interrupted run resumed this way
    ends with the figures an uninterrupted one would have had (bit for bit on the CPU).
    """
    device = x_train.device
    step_fn = build_step(model, objective, settings, mode, device)
    schedule = build_schedule(step_fn.optimizer, settings, epochs)
    if schedule is not None and reads_metric(schedule) and x_valid is None:
        raise ValueError("a schedule stepped on the validation figure needs a validation split")
    n = x_train.shape[0]
    outcome = TrainOutcome()
    if mode.compiled:  # every batch shape the loop and validation will see, compiled now
        valid = [] if x_valid is None else batch_shapes(x_valid, decode_batch(model, x_valid))
        outcome.compile_seconds = step_fn.precompile(batch_shapes(x_train, batch_size), valid)
    order_rng = torch.Generator().manual_seed(seed)
    watched = watched_key(objective)
    kept = _Progress()
    if state_path is not None and state_path.exists():
        earlier = TrainingState.load(state_path)
        earlier.restore(model, step_fn, schedule, order_rng, outcome, kept)
    started = time.perf_counter() - outcome.seconds - outcome.valid_seconds

    def training_seconds() -> float:
        return time.perf_counter() - started - outcome.valid_seconds

    model.train()
    for epoch in range(outcome.epochs_run + 1, epochs + 1):
        lr = float(step_fn.optimizer.param_groups[0]["lr"])
        # Sums stay on the device: the finiteness check is the step's only host sync.
        sums = {
            key: torch.zeros((), dtype=torch.float64, device=x_train.device) for key in HISTORY_KEYS
        }
        missing: set[str] = set()
        seen = 0
        order = torch.randperm(n, generator=order_rng).to(x_train.device)
        for start in range(0, n, batch_size):
            xb = x_train[order[start : start + batch_size]]
            if batch_transform is not None:
                xb = batch_transform(xb)
            loss, terms = step_fn.forward(xb, outcome.steps)
            outcome.steps += 1
            if not torch.isfinite(loss):
                outcome.status = f"diverged at step {outcome.steps}"
                outcome.seconds = training_seconds()
                return outcome
            step_fn.update(loss)
            b = xb.shape[0]
            seen += b
            sums["loss"] += loss.detach().double() * b
            for key in ("recon", "kl"):
                term = terms.get(key)
                if term is None:
                    missing.add(key)
                else:
                    sums[key] += term.detach().double().sum()
            if on_step is not None:
                on_step()
        record: dict[str, float] = {"epoch": epoch}
        record.update({k: math.nan if k in missing else v.item() / seen for k, v in sums.items()})
        record["lr"] = lr
        if x_valid is not None:
            validating = time.perf_counter()
            record.update(validate(model, objective, x_valid, outcome.steps))
            outcome.valid_seconds += time.perf_counter() - validating
            value = record[watched]
            if value < kept.best_value:  # NaN never improves
                kept.best_value, outcome.best_epoch = value, epoch
                kept.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        outcome.history.append(record)
        if schedule is not None and reads_metric(schedule):
            schedule.step(record[watched])
        elif schedule is not None:
            schedule.step()
        if (
            patience > 0
            and outcome.best_epoch is not None
            and epoch - outcome.best_epoch >= patience
            and epoch < epochs
        ):
            outcome.stopped_early = True
            break
        if state_path is not None and epoch < epochs:
            outcome.seconds = training_seconds()
            TrainingState.of(model, step_fn, schedule, order_rng, outcome, kept).save(state_path)
    if kept.best_state is not None:
        model.load_state_dict(kept.best_state)
    elif x_valid is None:
        outcome.best_epoch = outcome.epochs_run
    outcome.seconds = training_seconds()
    return outcome


STATE_FORMAT = 1


@dataclass
class TrainingState:
    """Everything an epoch hands the next, as tensors and plain containers (loaded with
    ``weights_only=True``): what ``--resume`` continues from."""

    payload: dict[str, Any]

    @classmethod
    def of(
        cls,
        model: VAE,
        step: TrainStep,
        schedule: Any,
        order_rng: torch.Generator,
        outcome: TrainOutcome,
        kept: _Progress,
    ) -> TrainingState:
        devices = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []
        return cls(
            {
                "format": STATE_FORMAT,
                "model": model.state_dict(),
                "optimizer": step.optimizer.state_dict(),
                "schedule": None if schedule is None else schedule.state_dict(),
                "scaler": None if step.scaler is None else step.scaler.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": [torch.cuda.get_rng_state(d) for d in devices],
                "order_rng": order_rng.get_state(),
                "history": outcome.history,
                "steps": outcome.steps,
                "seconds": outcome.seconds,
                "valid_seconds": outcome.valid_seconds,
                "best_epoch": outcome.best_epoch,
                "best_value": kept.best_value,
                "best_state": kept.best_state,
            }
        )

    def save(self, path: Path) -> None:
        atomic_torch_save(path, self.payload)

    @classmethod
    def load(cls, path: Path) -> TrainingState:
        from vaebench.errors import VaebenchError, first_line

        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            why = first_line(exc)
            raise VaebenchError(
                f"{path}: unreadable training state ({type(exc).__name__}: {why}); "
                "delete it to train this model from the start"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
            raise VaebenchError(f"{path}: not a vaebench training state of format {STATE_FORMAT}")
        return cls(payload)

    def restore(
        self,
        model: VAE,
        step: TrainStep,
        schedule: Any,
        order_rng: torch.Generator,
        outcome: TrainOutcome,
        kept: _Progress,
    ) -> None:
        state = self.payload
        model.load_state_dict(state["model"])
        step.optimizer.load_state_dict(state["optimizer"])
        if schedule is not None and state["schedule"] is not None:
            schedule.load_state_dict(state["schedule"])
        if step.scaler is not None and state["scaler"] is not None:
            step.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        for device, rng in enumerate(state["cuda_rng"]):
            torch.cuda.set_rng_state(rng, device)
        order_rng.set_state(state["order_rng"])
        outcome.history = list(state["history"])
        outcome.steps, outcome.seconds = state["steps"], state["seconds"]
        outcome.valid_seconds = state.get("valid_seconds", 0.0)  # absent before it existed
        outcome.best_epoch = state["best_epoch"]
        kept.best_value, kept.best_state = state["best_value"], state["best_state"]
