"""One way to build the training step: the optimizer and a ``TrainStep`` in a mode, from the
run's settings. Training and timing both call ``build_step``, so the timed step is the trained
step, and ``TrainStep.optimizer_step`` is the one place the weights change (eager, CUDA-graph
and fp16 paths alike).

Adding a setting the step uses (``grad_clip`` is the worked example) is a field in
``config.py`` and a field here, read where the step uses it; ``StepSettings.of`` copies it
from the config by name. The optimizer and the learning-rate schedule are plugins
(``vaebench_register_optimizers``/``_schedules``): ``torch.optim`` classes, declared options
and all, register as they are.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from vaebench.errors import ConfigError
from vaebench.model import VAE, Objective
from vaebench.modes import EAGER, Mode, Snapshot, compile_options
from vaebench.options import call_factory, check_option_keys

GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture (PyTorch's recipe)


NO_SCHEDULE = "none"


@dataclass(frozen=True)
class StepSettings:
    """What the training step reads from the run's config (same names as its fields); the
    optimizer and schedule are registered components (None: Adam, no schedule)."""

    lr: float = 2e-3
    grad_clip: float = 0.0  # largest global L2 norm of the gradients; 0: no clipping
    optimizer: Any = None  # a registry Component of kind "optimizer"; None: torch.optim.Adam
    optimizer_options: Mapping[str, Any] = field(default_factory=dict)
    lr_schedule: Any = None  # a registry Component of kind "schedule"; None: a constant rate
    schedule_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, config: Any, registry: Any) -> StepSettings:
        """The step's settings from a ``RunConfig``, its components from ``registry``."""
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)}
        values["optimizer"] = registry.get("optimizer", config.optimizer)
        if config.lr_schedule != NO_SCHEDULE:
            values["lr_schedule"] = registry.get("schedule", config.lr_schedule)
        else:
            values["lr_schedule"] = None
        return cls(**values)

    def check(self, epochs: int, mode_graphs: bool = False) -> None:
        """Build the optimizer and schedule once on a stand-in parameter, so an unknown key or
        a bad value stops the run before training (``ConfigError`` naming the flag)."""
        stand_in = torch.nn.Linear(1, 1)
        for component, options, flag in (
            (self.optimizer, self.optimizer_options, "-O"),
            (self.lr_schedule, self.schedule_options, "-S"),
        ):
            if component is not None:
                check_option_keys([component], dict(options), flag, 1)
        capturable = self.optimizer is None or (
            "capturable" in inspect.signature(self.optimizer.factory).parameters
        )
        if mode_graphs and not capturable:
            raise ConfigError(
                f"--cuda-graphs needs an optimizer with a capturable step; "
                f"'{self.optimizer.name}' has none: use adam, adamw, adamax or rmsprop"
            )
        if mode_graphs and self.lr_schedule is not None:
            raise ConfigError(
                "--cuda-graphs bakes the learning rate into the captured step; "
                "a --lr-schedule would never reach it: drop one of them"
            )
        if self.lr_schedule is None and self.schedule_options:
            key = next(iter(self.schedule_options))
            raise ConfigError(f"-S {key}: no --lr-schedule is set; name one, or drop -S")
        optimizer = build_optimizer(stand_in, self, EAGER)
        try:  # a schedule reads some options only when stepped: step it once
            schedule = build_schedule(optimizer, self, epochs)
            if schedule is not None:
                optimizer.step()
                if reads_metric(schedule):
                    schedule.step(0.0)
                else:
                    schedule.step()
        except (TypeError, ValueError) as exc:
            name = self.lr_schedule.name if self.lr_schedule is not None else "none"
            raise ConfigError(
                f"-S: schedule '{name}' cannot run with {dict(self.schedule_options)}: {exc}"
            ) from None


DEFAULTS = StepSettings()  # Adam at the default learning rate, no clipping, no schedule


def build_optimizer(
    model: torch.nn.Module, settings: StepSettings, mode: Mode
) -> torch.optim.Optimizer:
    """The optimizer over the model's parameters; a captured step keeps its step count on the
    device (``capturable=True``). List options become tuples (``betas``)."""
    if settings.optimizer is None:
        return torch.optim.Adam(model.parameters(), lr=settings.lr, capturable=mode.cuda_graphs)
    options = {
        k: tuple(v) if isinstance(v, list) else v for k, v in settings.optimizer_options.items()
    }
    context = {"capturable": True} if mode.cuda_graphs else {}
    return call_factory(
        settings.optimizer,
        model.parameters(),
        lr=settings.lr,
        options=options,
        flag="-O",
        **context,
    )


def build_schedule(optimizer: torch.optim.Optimizer, settings: StepSettings, epochs: int) -> Any:
    """The learning-rate schedule on ``optimizer`` (None for a constant rate), stepped by the
    loop once per epoch; ``epochs`` is handed to a schedule that declares it."""
    if settings.lr_schedule is None:
        return None
    return call_factory(
        settings.lr_schedule,
        optimizer,
        options=dict(settings.schedule_options),
        flag="-S",
        epochs=epochs,
    )


def reads_metric(schedule: Any) -> bool:
    """A schedule stepped on the validation figure (``ReduceLROnPlateau.step(metrics)``)."""
    return "metrics" in inspect.signature(schedule.step).parameters


def build_step(
    model: VAE, objective: Objective, settings: StepSettings, mode: Mode, device: torch.device
) -> TrainStep:
    """The training step of ``model`` in ``mode``: its optimizer, scaler, compilation, graphs."""
    return TrainStep(
        model, objective, build_optimizer(model, settings, mode), mode, device, settings
    )


class TrainStep:
    """One training step on a batch, in a mode: a gradient scaler for fp16, the objective
    compiled (forward and, through AOT autograd, backward), or the whole step (forward,
    backward, Adam) captured in a CUDA graph per batch shape.

    ``forward`` and ``update`` are split so the loop can refuse a non-finite loss before it
    reaches the weights; ``__call__`` does both (timing). Under CUDA graphs both happen in
    ``forward`` (one replay), so a non-finite loss is seen after its step. The model must have
    been through ``Mode.prepare``.
    """

    def __init__(
        self,
        model: VAE,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        mode: Mode,
        device: torch.device,
        settings: StepSettings | None = None,
    ) -> None:
        self.model, self.objective, self.optimizer = model, objective, optimizer
        self.mode, self.device = mode, device
        self.settings = settings or StepSettings()
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.scaler = torch.amp.GradScaler(device.type) if mode.precision == "fp16" else None
        self.loss_fn: Callable[..., Any] = self._loss
        if mode.compiled:
            self.loss_fn = torch.compile(self._loss, **compile_options(mode.compile))
        self.compile_seconds = 0.0
        self._graphs: dict[tuple[int, ...], _GraphedStep] = {}

    def _loss(self, x: torch.Tensor, step: int):
        return self.objective.loss(self.model, x, step)

    def forward(self, x: torch.Tensor, step: int):
        if self.mode.cuda_graphs:
            shape = tuple(x.shape)
            if shape not in self._graphs:
                self._graphs[shape] = _GraphedStep(self, x)
            return self._graphs[shape].replay(x)
        return self.loss_fn(x, step)

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of ``loss`` (scaled under fp16)."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def optimizer_step(self) -> None:
        """The one place the weights change, for the eager, graphed and fp16 paths alike:
        gradients unscaled (fp16), clipped (``--grad-clip``), then the optimizer's step
        (through the scaler under fp16, which skips a step with non-finite gradients)."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.settings.grad_clip)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()

    def update(self, loss: torch.Tensor) -> None:
        if self.mode.cuda_graphs:
            return  # the replay already stepped
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss)
        self.optimizer_step()

    def __call__(self, x: torch.Tensor, step: int = 0):
        loss, terms = self.forward(x, step)
        self.update(loss)
        return loss, terms

    def precompile(self, shapes: list[torch.Tensor], eval_shapes: list[torch.Tensor] = ()) -> float:
        """Compile before training, outside the clock of every figure: for each batch shape
        a forward and backward at steps 0 and 1 (an int that changes becomes dynamic: one
        recompile, here), and each validation shape in eval mode without gradients. Leaves
        no trace: forked RNG, gradients dropped, weights and buffers restored. Seconds."""
        if not self.mode.compiled:
            return 0.0
        started = time.perf_counter()
        snapshot = Snapshot.of(self.model)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self.model.train()
            for x in shapes:
                for step in (0, 1):
                    loss, _ = self.loss_fn(x, step)
                    loss.backward()
                    self.optimizer.zero_grad(set_to_none=True)
            self.model.eval()
            with torch.no_grad():
                for x in eval_shapes:
                    self.objective.loss(self.model, x, 1)
            self.model.train()
        snapshot.restore(self.model)
        self.compile_seconds += time.perf_counter() - started
        return self.compile_seconds


@dataclass
class _TrainingState:
    """Adam's per-parameter state and the fp16 scaler's scale, to put back in place after
    warm-up steps: what existed is copied back, what the warm-up created is zeroed (Adam as
    if new: moments and step count 0), and the scale returns to its value or initial value."""

    adam: dict[int, dict[str, torch.Tensor]]
    scale: tuple[torch.Tensor, torch.Tensor] | None

    @classmethod
    def of(cls, step: TrainStep) -> _TrainingState:
        adam = {
            id(p): {k: v.clone() for k, v in state.items() if torch.is_tensor(v)}
            for p, state in step.optimizer.state.items()
        }
        scaler = step.scaler
        scale = None
        if scaler is not None and scaler._scale is not None:
            scale = (scaler._scale.clone(), scaler._growth_tracker.clone())
        return cls(adam, scale)

    def restore(self, step: TrainStep) -> None:
        with torch.no_grad():
            for p, state in step.optimizer.state.items():
                before = self.adam.get(id(p), {})
                for key, value in state.items():
                    if torch.is_tensor(value):
                        if key in before:
                            value.copy_(before[key])
                        else:
                            value.zero_()
            scaler = step.scaler
            if scaler is not None and scaler._scale is not None:
                if self.scale is None:
                    scaler._scale.fill_(scaler._init_scale)
                    scaler._growth_tracker.zero_()
                else:
                    scaler._scale.copy_(self.scale[0])
                    scaler._growth_tracker.copy_(self.scale[1])


class _GraphedStep:
    """Forward, backward and Adam step captured once in a CUDA graph, replayed per batch.

    The batch is copied into a static input; the loss and terms come back in static outputs.
    Under fp16 the graph holds forward and scaled backward, and the scaler's step (its inf
    check needs the host) follows each replay. Noise stays fresh: torch's generator and the
    fused kernel's device-side key both advance at each replay. The warm-up steps before
    capture leave no trace (weights, buffers, Adam's moments and step count, the scaler's
    scale restored in place; RNG forked). The KL weight is frozen at capture
    (``--kl-warmup 0``).
    """

    def __init__(self, step: TrainStep, example: torch.Tensor) -> None:
        self.static_x = example.clone()
        self.step = step
        weights, state = Snapshot.of(step.model), _TrainingState.of(step)
        side = torch.cuda.Stream(step.device)
        side.wait_stream(torch.cuda.current_stream(step.device))
        with torch.random.fork_rng(devices=[step.device]), torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_STEPS):
                step.optimizer.zero_grad(set_to_none=True)
                self._captured()
                self._eager_tail()
        torch.cuda.current_stream(step.device).wait_stream(side)
        weights.restore(step.model)
        state.restore(step)
        self.graph = torch.cuda.CUDAGraph()
        step.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss, self.terms = self._captured()

    def _captured(self):
        """Forward and backward, and the optimizer's step unless fp16's scaler must take it."""
        step = self.step
        loss, terms = step.loss_fn(self.static_x, 0)
        step.backward(loss)
        if step.scaler is None:
            step.optimizer_step()
        return loss, terms

    def _eager_tail(self) -> None:
        """fp16: the scaler's inf check needs the host, so its step follows each replay."""
        if self.step.scaler is not None:
            self.step.optimizer_step()

    def replay(self, x: torch.Tensor):
        self.static_x.copy_(x)
        self.graph.replay()
        self._eager_tail()
        return self.loss, self.terms
