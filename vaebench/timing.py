"""Throughput measurement: warm up, synchronize, repeat, report the median and spread.

Built on ``torch.utils.benchmark.Timer``, which synchronizes the accelerator around every
timed block and picks a block size that makes the timer's own overhead negligible.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils import benchmark

from vaebench.kernels import reparameterize_kl
from vaebench.model import VAE, Objective

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


def measure_model(
    model: VAE, objective: Objective, batch: torch.Tensor, *, lr: float, min_run_time: float
) -> dict[str, Timing]:
    """Training step (objective forward, backward, Adam step), encode and decode throughput.

    The training step runs on a deep copy so that timing never changes the evaluated model.
    """
    device = batch.device
    scratch = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(scratch.parameters(), lr=lr)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        objective.loss(scratch, batch, 0)[0].backward()
        optimizer.step()

    model.eval()
    with torch.no_grad():
        z = model.encode(batch)[0].detach()

    def encode() -> None:
        with torch.no_grad():
            model.encode(batch)

    def decode() -> None:
        with torch.no_grad():
            model.decode(z)

    n = batch.shape[0]
    return {
        "train": time_call(train_step, batch_size=n, device=device, min_run_time=min_run_time),
        "encode": time_call(encode, batch_size=n, device=device, min_run_time=min_run_time),
        "decode": time_call(decode, batch_size=n, device=device, min_run_time=min_run_time),
    }


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
