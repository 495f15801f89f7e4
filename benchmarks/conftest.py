"""pytest-benchmark setup: device-synchronized timing on CUDA and the versions in machine info."""

from __future__ import annotations

import os

import pytest
import torch

from vaebench.io import environment

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # lets the smoke run reach the triton path

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_benchmark_update_machine_info(config, machine_info):
    """The same environment record a ``vaebench run`` writes (``vaebench.io.environment``)."""
    machine_info.update(environment(DEVICE.type))


@pytest.fixture
def device() -> torch.device:
    return DEVICE


@pytest.fixture
def synchronized():
    """Wrap a callable so each timed call waits for the device: an honest wall-clock per call."""

    def wrap(fn):
        if DEVICE.type != "cuda":
            return fn

        def call():
            out = fn()
            torch.cuda.synchronize()
            return out

        return call

    return wrap
