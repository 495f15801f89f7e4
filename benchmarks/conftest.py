"""pytest-benchmark setup: device-synchronized timing on CUDA and the versions in machine info."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # lets the smoke run reach the triton path

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_benchmark_update_machine_info(config, machine_info):
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = None
    machine_info["torch"] = torch.__version__
    machine_info["triton"] = triton_version
    machine_info["cuda"] = torch.version.cuda
    machine_info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    machine_info["torch_threads"] = torch.get_num_threads()


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
