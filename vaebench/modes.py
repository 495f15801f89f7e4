"""How a model runs: its precision, compilation and CUDA-graph capture (one ``Mode`` per row).

Training, evaluation and timing all take their step and their autocast from here, so a
mode's quality and its speed are measured on the same code. Networks (encoder, decoder,
priors with layers) run in the mode's precision under ``torch.autocast``; likelihoods, KL
terms and metrics read fp32 (``VAE.encode``/``decode`` return fp32), so a bf16 row's nats
measure the model, not bf16 sums over 784 pixels.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from vaebench.errors import ConfigError
from vaebench.model import VAE, Objective

LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}
GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture (PyTorch's recipe)


@dataclass(frozen=True)
class Mode:
    """``precision``: fp32, bf16 / fp16 (autocast; fp16 with a gradient scaler) or tf32
    (CUDA matmuls and convolutions in TF32). ``compile``: none or a ``torch.compile`` mode.
    ``cuda_graphs``: the training step captured once and replayed per batch (CUDA)."""

    precision: str = "fp32"
    compile: str = "none"
    cuda_graphs: bool = False

    @property
    def is_reference(self) -> bool:
        """fp32, not compiled: the row every other mode's quality is compared with. A graph
        replays the eager step's own kernels, so a --cuda-graphs run's fp32 row is it too."""
        return self.precision == "fp32" and self.compile == "none"

    def check(self, device: torch.device) -> None:
        """A mode this device cannot run is a ConfigError naming the flag."""
        if device.type != "cuda":
            if self.precision == "tf32":
                raise ConfigError("--precision tf32 is a CUDA matmul mode; this run is on the CPU")
            if self.cuda_graphs:
                raise ConfigError(
                    "--cuda-graphs captures the training step on a CUDA device; this run is on "
                    "the CPU (drop the flag, or use --device cuda on a GPU machine)"
                )

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        """The precision's context for every forward pass (training, evaluation, timing)."""
        if self.precision in LOW_PRECISION:
            with torch.autocast(device.type, dtype=LOW_PRECISION[self.precision]):
                yield
        elif self.precision == "tf32":
            saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            try:
                yield
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        else:
            yield

    def prepare(self, model: VAE) -> VAE:
        """Compile the encoder and decoder in place (``nn.Module.compile``: the state dict,
        checkpoints and every caller stay as they are); evaluation and timing use them."""
        if self.compile != "none":
            for network in (model.encoder, model.decoder):
                network.compile(**compile_options(self.compile))
        return model


EAGER = Mode()  # fp32, not compiled, no graphs: the reference mode


def compile_options(mode: str) -> dict[str, Any]:
    return {} if mode == "default" else {"mode": mode}


def optimizer_for(model: VAE, lr: float, mode: Mode) -> torch.optim.Adam:
    # A captured step keeps Adam's step count on the device (capturable=True).
    return torch.optim.Adam(model.parameters(), lr=lr, capturable=mode.cuda_graphs)


class TrainStep:
    """One training step on a batch, in a mode: autocast, a gradient scaler for fp16, the
    objective compiled (forward and, through AOT autograd, backward), or the whole step
    (forward, backward, Adam) captured in a CUDA graph.

    ``forward`` and ``update`` are split so the loop can refuse a non-finite loss before it
    reaches the weights; ``__call__`` does both (timing). Under CUDA graphs both happen in
    ``forward`` (one replay), so a non-finite loss is seen after its step.
    """

    def __init__(
        self,
        model: VAE,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        mode: Mode,
        device: torch.device,
    ) -> None:
        self.model, self.objective, self.optimizer = model, objective, optimizer
        self.mode, self.device = mode, device
        self.scaler = torch.amp.GradScaler(device.type) if mode.precision == "fp16" else None
        self.loss_fn: Callable[..., Any] = self._loss
        if mode.compile != "none":
            self.loss_fn = torch.compile(self._loss, **compile_options(mode.compile))
        self.compile_seconds = 0.0
        self._graph: _GraphedStep | None = None

    def _loss(self, x: torch.Tensor, step: int):
        return self.objective.loss(self.model, x, step)

    def forward(self, x: torch.Tensor, step: int):
        if self.mode.cuda_graphs:
            graphed = self._graphed(x)
            if graphed is not None:
                return graphed.replay(x)
        with self.mode.autocast(self.device):
            return self.loss_fn(x, step)

    def update(self, loss: torch.Tensor) -> None:
        if self.mode.cuda_graphs and self._graph is not None and self._graph.owns(loss):
            return  # the replay already stepped
        self.optimizer.zero_grad(set_to_none=not self.mode.cuda_graphs)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()

    def __call__(self, x: torch.Tensor, step: int = 0):
        loss, terms = self.forward(x, step)
        self.update(loss)
        return loss, terms

    def precompile(self, shapes: list[torch.Tensor]) -> float:
        """Compile for each batch shape before training, outside the clock of every figure:
        a forward and backward per shape, leaving no trace (forked RNG, gradients dropped,
        buffers such as BatchNorm statistics restored). Returns the seconds spent."""
        if self.mode.compile == "none":
            return 0.0
        started = time.perf_counter()
        buffers = {name: b.detach().clone() for name, b in self.model.named_buffers()}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for x in shapes:
                with self.mode.autocast(self.device):
                    loss, _ = self.loss_fn(x, 0)
                loss.backward()
                self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in self.model.named_buffers():
                b.copy_(buffers[name])
        self.compile_seconds += time.perf_counter() - started
        return self.compile_seconds

    def _graphed(self, x: torch.Tensor) -> _GraphedStep | None:
        """The captured step for this batch shape (the first shape seen); other shapes (a
        short last batch) run eagerly."""
        if self._graph is None:
            self._graph = _GraphedStep(self, x)
        return self._graph if self._graph.shape == tuple(x.shape) else None


class _GraphedStep:
    """Forward, backward and Adam step captured once in a CUDA graph, replayed per batch.

    The batch is copied into a static input; the loss and terms come back in static
    outputs; under fp16 the gradient scaler's step follows each replay, eagerly. Noise stays fresh: torch's generator and the fused kernel's device-side key are
    both advanced by each replay. The KL weight is frozen at capture (``--kl-warmup 0``).
    """

    def __init__(self, step: TrainStep, example: torch.Tensor) -> None:
        self.shape = tuple(example.shape)
        self.static_x = example.clone()
        self.step = step
        side = torch.cuda.Stream(step.device)
        side.wait_stream(torch.cuda.current_stream(step.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_STEPS):  # real training steps, on the first batch
                step.optimizer.zero_grad(set_to_none=True)
                self._captured()
                self._eager_tail()
        torch.cuda.current_stream(step.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        step.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss, self.terms = self._captured()

    def _captured(self):
        """Forward and backward, and Adam's step unless fp16's scaler must take it: the scaler
        checks gradients for inf on the host, so under fp16 the step runs after each replay."""
        step = self.step
        with step.mode.autocast(step.device):
            loss, terms = step.loss_fn(self.static_x, 0)
        (loss if step.scaler is None else step.scaler.scale(loss)).backward()
        if step.scaler is None:
            step.optimizer.step()
        return loss, terms

    def _eager_tail(self) -> None:
        if self.step.scaler is not None:
            self.step.scaler.step(self.step.optimizer)
            self.step.scaler.update()

    def owns(self, loss: torch.Tensor) -> bool:
        return loss is self.loss

    def replay(self, x: torch.Tensor):
        self.static_x.copy_(x)
        self.graph.replay()
        self._eager_tail()
        return self.loss, self.terms


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak tensor memory of one call above what was live before it, in MiB.

    CUDA: the caching allocator's ``max_memory_allocated`` after a reset (exact). CPU: the
    profiler's allocation events (every tensor allocated and freed by the CPU allocator,
    in time order), whose running sum peaks at the same figure; memory outside the allocator
    (Python objects, oneDNN scratch) is not in it.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with _profile() as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Kineto prints a line to the process's stderr at every profiler start and stop, and
    c10 a one-time warning; neither is the user's business. Python's own writes are flushed
    first, so nothing of theirs is lost."""
    import os
    import sys

    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_warned_once = False


@contextlib.contextmanager
def _profile(cuda: bool = False) -> Iterator[Any]:
    """The profiler (CPU allocations; with ``cuda`` device kernels instead), started and
    stopped without native noise on stderr."""
    global _warned_once
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    if not _warned_once:  # c10 warns once per process when a block from before is freed
        block = torch.empty(1)
        with (
            _native_stderr_silenced(),
            profile(activities=[ProfilerActivity.CPU], profile_memory=True),
        ):
            del block
        _warned_once = True
    prof = profile(activities=activities, profile_memory=not cuda)
    with _native_stderr_silenced():
        prof.__enter__()
    try:
        yield prof
    finally:
        with _native_stderr_silenced():
            prof.__exit__(None, None, None)


def device_busy_fraction(fn: Callable[[], object], device: torch.device, calls: int = 10) -> float:
    """The sum of a step's device kernel times over its wall time (CUDA; NaN elsewhere).

    Near 1: the device is busy the whole step. Well below 1: the host (Python, launches) is
    the bottleneck and CUDA graphs or compilation would pay. The wall time is measured
    without the profiler (which slows the host), the kernel times with it.
    """
    if device.type != "cuda":
        return float("nan")
    fn()
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize(device)
    wall = time.perf_counter() - started
    with _profile(cuda=True) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize(device)
    kernels_us = sum(
        e.device_time for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
    )
    return kernels_us * 1e-6 / wall
