"""How a model runs: its precision, compilation and CUDA-graph capture (one ``Mode`` per row).

Training, evaluation and timing all take their step from here, so a mode's quality and its
speed are measured on the same code. Only the networks run in low precision: ``prepare``
gives the model an autocast dtype that ``VAE.encode``/``decode`` enter around the encoder
and decoder alone, and they hand fp32 on; likelihoods, KL terms, priors and every metric
(the sample-quality classifier, MMD, the probe) stay in fp32, so a bf16 row's figures
measure the model, not bf16 metrics. ``numerics`` sets the TF32 switches for a whole row.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from vaebench.errors import ConfigError
from vaebench.model import VAE

LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}
SELF_GRAPHING = ("reduce-overhead", "max-autotune")  # compile modes that capture graphs themselves


@dataclass(frozen=True)
class Mode:
    """``precision``: fp32, bf16 / fp16 (autocast around the networks; fp16 with a gradient
    scaler) or tf32 (CUDA matmuls and convolutions in TF32). ``compile``: none or a
    ``torch.compile`` mode. ``cuda_graphs``: the training step captured and replayed (CUDA)."""

    precision: str = "fp32"
    compile: str = "none"
    cuda_graphs: bool = False

    @property
    def compiled(self) -> bool:
        return self.compile != "none"

    @property
    def is_reference(self) -> bool:
        """fp32, not compiled: the row every other mode's quality is compared with. A graph
        replays the eager step's own kernels, so a --cuda-graphs run's fp32 row is it too."""
        return self.precision == "fp32" and not self.compiled

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
            return
        if self.cuda_graphs and self.compile in SELF_GRAPHING:
            raise ConfigError(
                f"--cuda-graphs with --compile {self.compile}: that mode captures CUDA graphs "
                "itself; use --compile none or default with --cuda-graphs"
            )
        major, _ = torch.cuda.get_device_capability(device)
        if self.precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16")
        if self.precision == "tf32" and major < 8:
            raise ConfigError(
                f"--precision tf32 needs an Ampere or newer GPU; "
                f"{torch.cuda.get_device_name(device)} is sm_{major}x"
            )

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return LOW_PRECISION.get(self.precision)

    @contextlib.contextmanager
    def numerics(self) -> Iterator[None]:
        """The whole row's matmul precision: TF32 on for tf32, and off otherwise (PyTorch
        leaves TF32 convolutions on by default, which would make an "fp32" row TF32)."""
        tf32 = self.precision == "tf32"
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def prepare(self, model: VAE) -> VAE:
        """The model in this mode: its networks' autocast dtype, and the encoder and decoder
        compiled in place (``nn.Module.compile``: the state dict, checkpoints and every
        caller stay as they are); training, evaluation and timing all use them."""
        model.autocast_dtype = self.autocast_dtype
        if self.compiled:
            for network in (model.encoder, model.decoder):
                network.compile(**compile_options(self.compile))
        return model


EAGER = Mode()  # fp32, not compiled, no graphs: the reference mode


def compile_options(mode: str) -> dict[str, Any]:
    return {} if mode == "default" else {"mode": mode}


@dataclass
class Snapshot:
    """Every parameter and buffer (persistent or not) of a model, to put back in place."""

    tensors: dict[str, torch.Tensor]

    @classmethod
    def of(cls, model: torch.nn.Module) -> Snapshot:
        named = [*model.named_parameters(), *model.named_buffers()]
        return cls({name: t.detach().clone() for name, t in named})

    def restore(self, model: torch.nn.Module) -> None:
        """Copied into the same storage, so a captured graph's addresses stay valid."""
        with torch.no_grad():
            for name, t in [*model.named_parameters(), *model.named_buffers()]:
                t.copy_(self.tensors[name])


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
