"""Timing, with a controlled clock and a recording stand-in for the device.

Each test names the bug it catches: a mean instead of the median, no warm-up, a clock read
without a device synchronization, a figure that is not batch / seconds per call.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vaebench import timing
from vaebench.modes import Mode
from vaebench.plugins.objectives import VAEObjective
from vaebench.step import StepSettings
from vaebench.timing import WARMUP_CALLS, summarize, time_call


def test_summary_is_median_and_quartiles_not_the_mean():
    result = summarize([0.004, 0.001, 0.003, 0.002, 0.100], batch_size=6)  # one outlier
    assert result.median_s == pytest.approx(0.003)  # the mean would be 0.022
    assert (result.q25_s, result.q75_s) == (pytest.approx(0.002), pytest.approx(0.004))
    assert result.samples_per_s == pytest.approx(2000.0)
    assert result.relative_spread == pytest.approx(0.002 / 0.003)
    assert result.runs == 5 and result.batch_size == 6


class FakeDevice:
    """A clock that advances only when the timed function runs, and a log of events."""

    def __init__(self, seconds_per_call: float) -> None:
        self.now, self.step, self.events = 0.0, seconds_per_call, []

    def fn(self) -> None:
        self.events.append("call")
        self.now += self.step

    def clock(self) -> float:
        self.events.append("clock")
        return self.now

    def synchronize(self, device) -> None:
        self.events.append(f"sync:{device.type}")


@pytest.fixture
def fake(monkeypatch) -> FakeDevice:
    device = FakeDevice(seconds_per_call=0.002)
    monkeypatch.setattr(timing, "synchronize", device.synchronize)
    return device


def test_figure_is_batch_over_seconds_per_call(fake):
    result = time_call(
        fake.fn, batch_size=64, device=torch.device("cuda"), min_run_time=0.2, clock=fake.clock
    )
    assert result.median_s == pytest.approx(0.002)
    assert result.samples_per_s == pytest.approx(32_000)
    assert result.relative_spread == pytest.approx(0.0, abs=1e-9)
    assert result.runs >= 2


def test_warm_up_calls_precede_the_first_clock_read(fake):
    time_call(
        fake.fn, batch_size=1, device=torch.device("cuda"), min_run_time=0.05, clock=fake.clock
    )
    first_clock = fake.events.index("clock")
    assert fake.events[:first_clock].count("call") == WARMUP_CALLS


def test_every_clock_read_follows_a_device_synchronization(fake):
    time_call(
        fake.fn, batch_size=1, device=torch.device("cuda"), min_run_time=0.05, clock=fake.clock
    )
    reads = [i for i, event in enumerate(fake.events) if event == "clock"]
    assert len(reads) >= 4
    assert all(fake.events[i - 1] == "sync:cuda" for i in reads)


def test_time_call_runs_until_min_run_time(fake):
    time_call(
        fake.fn, batch_size=1, device=torch.device("cuda"), min_run_time=0.2, clock=fake.clock
    )
    timed = fake.events.count("call") - WARMUP_CALLS
    assert timed * fake.step >= 0.2  # at least min_run_time of timed calls
    assert timed * fake.step < 0.2 * 3  # and not far beyond it


def test_iqr_and_spread_of_an_asymmetric_sample():
    result = summarize([1.0, 2.0, 3.0, 10.0, 20.0], batch_size=4)
    assert (result.q25_s, result.median_s, result.q75_s) == (2.0, 3.0, 10.0)
    assert result.iqr_s == 8.0 and result.relative_spread == pytest.approx(8 / 3)
    assert result.samples_per_s == pytest.approx(4 / 3)


def test_synchronize_waits_only_on_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    timing.synchronize(torch.device("cpu"))
    assert calls == []
    cuda = torch.device("cuda", 1)
    timing.synchronize(cuda)
    assert calls == [cuda]


def test_repeat_to_cycles_the_examples():
    x = torch.arange(3).view(3, 1)
    assert timing.repeat_to(x, 7).view(-1).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert timing.repeat_to(x, 2).view(-1).tolist() == [0, 1]


@pytest.mark.parametrize(
    "exc, expected",
    [
        (MemoryError("no room"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 8 TB"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("out of range"), False),
    ],
)
def test_out_of_memory_is_recognised_by_type_or_message(exc, expected):
    assert timing.out_of_memory(exc) is expected


def tiny_model():
    from tests.helpers import tiny_vae

    return tiny_vae().train()


class FakeTimer:
    """``time_call`` that calls once, noting the mode the model was in, and returns a figure."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, []

    def __call__(self, fn, *, batch_size, device, min_run_time):
        fn()
        self.calls.append((batch_size, self.model.training, min_run_time))
        return timing.Timing(0.001 * len(self.calls), 0.0, 0.0, 1, batch_size)


def test_measure_model_phases_modes_and_restored_weights(monkeypatch):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    timer = FakeTimer(model)
    monkeypatch.setattr(timing, "time_call", timer)
    monkeypatch.setattr(timing, "peak_memory_mb", lambda fn, device: 1.5)
    x = torch.rand(5, 1, 3, 4)
    result = timing.measure_model(
        model, VAEObjective(), x, [4, 8, 4], settings=StepSettings(lr=1e-2), min_run_time=0.3
    )
    assert list(result.figures) == [4, 8]  # each size once, in the order asked
    # train in train mode, encode and decode in eval mode, at each size
    assert timer.calls == [
        (4, True, 0.3), (4, False, 0.3), (4, False, 0.3),
        (8, True, 0.3), (8, False, 0.3), (8, False, 0.3),
    ]  # fmt: skip
    assert [result.figures[8][p].timing.median_s for p in timing.PHASES] == [0.004, 0.005, 0.006]
    assert all(f.peak_mb == 1.5 for size in result.figures.values() for f in size.values())
    assert result.compile_seconds == 0.0 and result.out_of_memory == []
    assert torch.isnan(torch.tensor(result.device_busy))  # CPU: no device-busy figure
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # timing left no trace
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_measure_model_skips_a_size_that_does_not_fit(monkeypatch):
    model = tiny_model()
    real = timing._measure_size

    def planted(result, model, step, x, size, *args):
        if size == 1024:
            raise RuntimeError("CUDA out of memory. Tried to allocate 9 GiB")
        if size == 2048:
            raise RuntimeError("a bug, not memory")
        return real(result, model, step, x, size, *args)

    monkeypatch.setattr(timing, "_measure_size", planted)
    x = torch.rand(5, 1, 3, 4)
    result = timing.measure_model(
        model, VAEObjective(), x, [4, 1024], settings=StepSettings(lr=1e-2), min_run_time=0.001
    )
    assert list(result.figures) == [4] and result.out_of_memory == [1024]
    with pytest.raises(RuntimeError, match="a bug"):
        timing.measure_model(
            model, VAEObjective(), x, [4, 2048], settings=StepSettings(lr=1e-2), min_run_time=0.001
        )
    with pytest.raises(RuntimeError, match="out of memory"):  # the run's own batch must fit
        timing.measure_model(
            model, VAEObjective(), x, [1024, 4], settings=StepSettings(lr=1e-2), min_run_time=0.001
        )


def test_measure_reparam_kl_times_its_rows():
    result = timing.measure_reparam_kl(
        "torch", rows=32, latent_dim=4, device=torch.device("cpu"), min_run_time=0.01
    )
    assert result.batch_size == 32 and result.runs >= 1 and result.median_s > 0


def test_measure_reparam_kl_times_forward_and_backward_of_its_backend(monkeypatch):
    seen = {}

    def spy(mu, logvar, *, backend):
        seen.update(mu=mu, logvar=logvar, backend=backend)
        return timing_reparameterize_kl(mu, logvar, backend="torch")

    from vaebench.kernels import reparameterize_kl as timing_reparameterize_kl

    monkeypatch.setattr(timing, "reparameterize_kl", spy)
    timing.measure_reparam_kl(
        "compile", rows=256, latent_dim=8, device=torch.device("cpu"), min_run_time=0.01
    )
    mu, logvar = seen["mu"], seen["logvar"]
    assert seen["backend"] == "compile" and mu.shape == (256, 8)
    assert 0.4 < logvar.std().item() < 0.6  # log-variances of a realistic spread
    # d/dmu of sum(z) + sum(KL) is 1 + mu per call: a backward of both, accumulated
    calls = mu.grad / (1 + mu.detach())
    assert torch.allclose(calls, calls[0, 0].round().expand_as(calls), rtol=1e-4)
    assert logvar.grad is not None and calls[0, 0] >= WARMUP_CALLS


def test_timing_keeps_the_process_thread_count():
    threads = torch.get_num_threads()
    seen = []
    try:
        torch.set_num_threads(2)  # torch's Timer would time with 1 thread unless told
        time_call(
            lambda: seen.append(torch.get_num_threads()),
            batch_size=1,
            device=torch.device("cpu"),
            min_run_time=0.001,
        )
    finally:
        torch.set_num_threads(threads)
    assert set(seen) == {2}


def test_a_kl_warm_up_objective_is_timed_at_a_real_step_number(monkeypatch):
    """KL warm-up weighs the KL by (step + 1) / warm-up steps: a step number that is not an
    int (a dropped argument) fails on the first training step timed."""
    model = tiny_model()
    monkeypatch.setattr(timing, "time_call", FakeTimer(model))
    monkeypatch.setattr(timing, "peak_memory_mb", lambda fn, device: 0.0)
    warm_up = VAEObjective(kl_warmup_steps=10)
    result = timing.measure_model(
        model,
        warm_up,
        torch.rand(5, 1, 3, 4),
        [4],
        settings=StepSettings(lr=1e-2),
        min_run_time=0.1,
    )
    assert list(result.figures) == [4]


class CompiledStandIn:
    """A compiled mode's training step whose every call costs 2 s on a controlled clock."""

    mode = Mode(compile="default")

    def __init__(self, clock: list[float]) -> None:
        self.clock, self.steps = clock, []

    def __call__(self, batch, step):
        self.steps.append(step)
        self.clock[0] += 2.0


def test_compile_seconds_add_up_over_batch_sizes_apart_from_the_timed_calls(monkeypatch):
    model = tiny_model()
    clock = [100.0]  # far from 0: a clock difference taken the wrong way round shows
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    timer = FakeTimer(model)
    monkeypatch.setattr(timing, "time_call", timer)
    monkeypatch.setattr(timing, "peak_memory_mb", lambda fn, device: 0.0)
    monkeypatch.setattr(timing, "device_busy_fraction", lambda fn, device: 0.5)
    step = CompiledStandIn(clock)
    result = timing.ModelTimings()
    x = torch.rand(5, 1, 3, 4)
    for size in (4, 8):  # one compiling call of the step per shape, then one timed
        timing._measure_size(result, model, step, x, size, 0.1, first=4)
    assert result.compile_seconds == pytest.approx(4.0)  # 2 s at each size, summed
    assert step.steps == [0, 0, 0, 0]  # at each size: the compiling call, the timed one
    assert result.device_busy == 0.5 and list(result.figures) == [4, 8]


def test_the_device_busy_share_is_measured_once_at_the_runs_own_batch(monkeypatch):
    model = tiny_model()
    monkeypatch.setattr(timing, "time_call", FakeTimer(model))
    monkeypatch.setattr(timing, "peak_memory_mb", lambda fn, device: 0.0)
    busy = []
    monkeypatch.setattr(timing, "device_busy_fraction", lambda fn, device: busy.append(1) or 0.5)
    x = torch.rand(5, 1, 3, 4)
    result = timing.measure_model(
        model, VAEObjective(), x, [8, 4, 16], settings=StepSettings(lr=1e-2), min_run_time=0.1
    )
    assert busy == [1] and result.device_busy == 0.5


def test_an_fp16_row_is_timed_through_its_gradient_scaler():
    """fp16 trains through a GradScaler made for the data's device: timing builds the same
    step, so a step made without the device fails here."""
    model = tiny_model()
    fp16 = Mode(precision="fp16")
    result = timing.measure_model(
        model,
        VAEObjective(),
        torch.rand(5, 1, 3, 4),
        [4],
        settings=StepSettings(lr=1e-2),
        min_run_time=0.01,
        mode=fp16,
    )
    assert result.figures[4]["train"].timing.samples_per_s > 0
