from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

# The sample metrics' classifier cache: one per test session, never the user's home.
os.environ.setdefault("VAEBENCH_CACHE", tempfile.mkdtemp(prefix="vaebench-test-cache-"))

# Without a GPU, Triton kernels run through the interpreter. Set before any kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tests.helpers import REPO, Result, cli, write_amat
from vaebench.registry import Registry

KERNEL_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
__all__ = ["REPO"]  # tests/test_docs.py still imports it from here: import it from tests.helpers


@pytest.fixture
def vaebench_cli(capsys, monkeypatch):
    """``vaebench_cli(*args, env=..., cwd=...)``: the CLI run in this process (``helpers.cli``).

    ``env`` sets environment variables and ``cwd`` the working directory, for that call only.
    """

    def call(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            if cwd is not None:
                patch.chdir(cwd)
            return cli(capsys, *args)

    return call


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where kernel tests build their tensors: CUDA when present, else the CPU (interpreter).

    The one place that decides it, so a GPU runs exactly the tests the CPU runs."""
    return KERNEL_DEVICE


def pytest_collection_modifyitems(config, items) -> None:
    """``@pytest.mark.cuda(devices=N)`` tests skip, with the reason, without N CUDA devices."""
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for item in items:
        marker = item.get_closest_marker("cuda")
        if marker is not None and have < marker.kwargs.get("devices", 1):
            need = marker.kwargs.get("devices", 1)
            item.add_marker(pytest.mark.skip(reason=f"needs {need} CUDA device(s), found {have}"))


@pytest.fixture
def registry() -> Registry:
    """Built-ins only: tests stay independent of whatever else is installed."""
    reg = Registry()
    reg.load_builtins()
    return reg


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)


@pytest.fixture
def static_mnist_root(tmp_path):
    """A data root holding static MNIST's three .amat files: 60/20/30 random binary images."""
    import numpy as np

    root = tmp_path / "data"
    folder = root / "binarized_mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("valid", 20), ("test", 30)):
        write_amat(folder / f"binarized_mnist_{split}.amat", rng.integers(0, 2, (n, 28, 28)))
    return root
