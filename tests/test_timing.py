"""Timing, with a controlled clock and a recording stand-in for the device.

Each test names the bug it catches: a mean instead of the median, no warm-up, a clock read
without a device synchronization, a figure that is not batch / seconds per call.
"""

from __future__ import annotations

import pytest
import torch

from vaebench import timing
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
