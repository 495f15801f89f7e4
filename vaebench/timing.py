"""Throughput measurement: warm up, synchronize, repeat, report the median and spread.

Built on ``torch.utils.benchmark.Timer``, which synchronizes the accelerator around every
timed block and picks a block size that makes the timer's own overhead negligible.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils import benchmark

from vaebench.kernels import reparameterize_kl
from vaebench.model import VAE, Objective
from vaebench.modes import EAGER, Mode, Snapshot, device_busy_fraction, peak_memory_mb
from vaebench.step import DEFAULTS, StepSettings, TrainStep, build_step

WARMUP_CALLS = 3


@dataclass(frozen=True)
class Timing:
    """Seconds per call of a batch of ``batch_size`` examples, over ``runs`` timed blocks."""

    median_s: float
    q25_s: float
    q75_s: float
    runs: int
    batch_size: int

    @property
    def iqr_s(self) -> float:
        return self.q75_s - self.q25_s

    @property
    def samples_per_s(self) -> float:
        return self.batch_size / self.median_s

    @property
    def relative_spread(self) -> float:
        """Inter-quartile range over median: 0.05 means the middle half of runs lie within 5%."""
        return self.iqr_s / self.median_s


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times: Sequence[float], batch_size: int) -> Timing:
    """Median and quartiles of seconds per call: the median, not the mean, so one slow
    block (a busy neighbour, a page fault) cannot move the figure."""
    q25, median, q75 = np.percentile(np.asarray(times, dtype=np.float64), [25, 50, 75])
    return Timing(float(median), float(q25), float(q75), len(times), batch_size)


def time_call(
    fn: Callable[[], object],
    *,
    batch_size: int,
    device: torch.device,
    min_run_time: float,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Warm up, then time blocks of calls until ``min_run_time``; every clock read is preceded
    by a device synchronization, so queued GPU work is inside the block that queued it."""
    for _ in range(WARMUP_CALLS):
        fn()

    def timer() -> float:
        synchronize(device)
        return clock()

    timer_ = benchmark.Timer(
        stmt="fn()", globals={"fn": fn}, timer=timer, num_threads=torch.get_num_threads()
    )
    return summarize(timer_.blocked_autorange(min_run_time=min_run_time).times, batch_size)


PHASES = ("train", "encode", "decode")


@dataclass(frozen=True)
class PhaseFigure:
    """One phase at one batch size: its timing and its peak memory."""

    timing: Timing
    peak_mb: float


@dataclass
class ModelTimings:
    """Every figure of one model: ``figures[batch_size][phase]``, plus compile time and (on
    CUDA) the share of the training step's wall time its kernels kept the device busy."""

    figures: dict[int, dict[str, PhaseFigure]] = field(default_factory=dict)
    compile_seconds: float = 0.0
    device_busy: float = float("nan")
    out_of_memory: list[int] = field(default_factory=list)  # batch sizes that did not fit


def repeat_to(x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A batch of ``batch_size`` examples from ``x``, cycling when it holds fewer: content
    does not change a step's cost, so small datasets still time large batches."""
    index = torch.arange(batch_size, device=x.device) % x.shape[0]
    return x[index]


def measure_model(
    model: VAE,
    objective: Objective,
    x: torch.Tensor,
    batch_sizes: Sequence[int],
    *,
    settings: StepSettings = DEFAULTS,
    min_run_time: float,
    mode: Mode = EAGER,
) -> ModelTimings:
    """Training step (``build_step``: the step training takes), encode and decode
    throughput and peak memory at each batch size, examples drawn from ``x``.

    The training steps change the weights, so they are saved before and restored after:
    timing never changes the evaluated model. The first calls of a compiled mode compile;
    they are timed apart (``compile_seconds``) and never enter a throughput figure.
    """
    device = x.device
    snapshot = Snapshot.of(model)
    result = ModelTimings()
    try:
        step = build_step(model, objective, settings, mode, device)
        for size in dict.fromkeys(batch_sizes):
            try:
                _measure_size(result, model, step, x, size, min_run_time, batch_sizes[0])
            except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is one
                if size == batch_sizes[0] or not out_of_memory(exc):
                    raise
                result.out_of_memory.append(size)  # a curve point too large for the device
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    finally:
        snapshot.restore(model)
        for parameter in model.parameters():
            parameter.grad = None  # nothing of timing outlives it (a graph's pool included)
        model.eval()
    return result


def out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate" in text


def _measure_size(
    result: ModelTimings,
    model: VAE,
    step: TrainStep,
    x: torch.Tensor,
    size: int,
    min_run_time: float,
    first: int,
) -> None:
    """One batch size's figures into ``result`` (the caller restores the weights): the
    training step in train mode, encode and decode in eval mode, as each is used."""
    device, mode = x.device, step.mode
    batch = repeat_to(x, size)

    def train_step() -> None:
        step(batch, 0)

    def encode() -> None:
        with torch.no_grad():
            model.encode(batch)

    started = time.perf_counter()
    model.eval()
    with torch.no_grad():
        codes = model.encode(batch)[0]  # (compiles the encoder for this shape)

    def decode() -> None:
        with torch.no_grad():
            model.decode(codes)

    peaks: dict[str, float] = {}
    model.train()
    if mode.cuda_graphs:  # the capture allocates the graph's pool: the step's real memory
        peaks["train"] = peak_memory_mb(train_step, device)
    if mode.compiled:  # the first calls of each shape and mode compile
        train_step()
        model.eval()
        decode()
        result.compile_seconds += time.perf_counter() - started
    figures = {}
    for phase, call in zip(PHASES, (train_step, encode, decode), strict=True):
        model.train(phase == "train")
        timing = time_call(call, batch_size=size, device=device, min_run_time=min_run_time)
        peak = peaks[phase] if phase in peaks else peak_memory_mb(call, device)
        figures[phase] = PhaseFigure(timing, peak)
    result.figures[size] = figures
    if size == first:
        model.train()
        result.device_busy = device_busy_fraction(train_step, device)


def measure_reparam_kl(
    backend: str, *, rows: int, latent_dim: int, device: torch.device, min_run_time: float
) -> Timing:
    """Forward + backward of ``reparameterize_kl`` alone at the run's batch and latent size."""
    mu = torch.randn(rows, latent_dim, device=device, requires_grad=True)
    logvar = torch.randn(rows, latent_dim, device=device).mul_(0.5).requires_grad_()

    def step() -> None:
        z, kl = reparameterize_kl(mu, logvar, backend=backend)
        (z.sum() + kl.sum()).backward()

    return time_call(step, batch_size=rows, device=device, min_run_time=min_run_time)


def throughput(
    model: VAE,
    objective: Objective,
    x: torch.Tensor,
    *,
    batch: int,
    curve: Sequence[int] = (),
    settings: StepSettings = DEFAULTS,
    min_run_time: float,
    mode: Mode = EAGER,
) -> dict[str, Any]:
    """A row's throughput columns: train/encode/decode throughput and peak memory at the
    run's timing ``batch``, and at each ``curve`` batch (``--timing-batch-sizes``: the curve
    and its best training batch size). Examples come from ``x``."""
    default, curve = batch, list(curve)
    timings = measure_model(
        model,
        objective,
        x,
        [default, *curve],
        settings=settings,
        min_run_time=min_run_time,
        mode=mode,
    )
    result: dict[str, Any] = {"timing_batch_size": default}
    if not math.isnan(timings.device_busy):  # measured on CUDA only
        result["train_device_busy"] = timings.device_busy
    if mode.compiled:
        result["compile_seconds"] = timings.compile_seconds
    for phase, figure in timings.figures[default].items():
        result[f"{phase}_samples_per_s"] = figure.timing.samples_per_s
        result[f"{phase}_spread"] = figure.timing.relative_spread
        result[f"{phase}_timed_runs"] = figure.timing.runs
        result[f"{phase}_peak_mb"] = figure.peak_mb
    for size in curve:
        for phase, figure in timings.figures.get(size, {}).items():
            result[f"{phase}_samples_per_s_at_{size}"] = figure.timing.samples_per_s
            result[f"{phase}_peak_mb_at_{size}"] = figure.peak_mb
    if timings.out_of_memory:
        result["timing_out_of_memory"] = ",".join(map(str, timings.out_of_memory))
    if curve:  # among every size timed, the run's own included
        speed = {size: f["train"].timing.samples_per_s for size, f in timings.figures.items()}
        result["best_train_batch_size"] = max(speed, key=speed.get)
    return result
