from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

# The sample metrics' classifier cache: one per test session, never the user's home.
os.environ.setdefault("VAEBENCH_CACHE", tempfile.mkdtemp(prefix="vaebench-test-cache-"))

# Without a GPU, Triton kernels run through the interpreter. Set before any kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from vaebench.registry import Registry

REPO = Path(__file__).resolve().parents[1]
# `vaebench run` arguments for a run of a few seconds: small synthetic data, 2 epochs.
FAST_CLI = (
    "--dataset",
    "synthetic",
    "-D",
    "n_train=64",
    "-D",
    "n_test=16",
    "--epochs",
    "2",
    "--iw-samples",
    "4",
    "--timing-min-time",
    "0.01",
)


@pytest.fixture
def registry() -> Registry:
    """Built-ins only: tests stay independent of whatever else is installed."""
    reg = Registry()
    reg.load_builtins()
    return reg


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)


def write_distribution(
    root: Path, dist: str, version: str, module: str, source: str, entry_points: dict[str, str]
) -> Path:
    """A minimal installed distribution: a module and a ``.dist-info`` with real entry points.

    ``importlib.metadata`` finds it once ``root`` is on ``sys.path``, exactly as it would
    find a pip-installed plugin.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[vaebench]\n{lines}\n")
    return root


def run_cli(
    *args: str, env_extra: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "vaebench", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture
def static_mnist_root(tmp_path):
    """A data root holding static MNIST's three .amat files: 60/20/30 random binary images."""
    import numpy as np

    from tests.test_formats import write_amat

    root = tmp_path / "data"
    folder = root / "binarized_mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("valid", 20), ("test", 30)):
        write_amat(folder / f"binarized_mnist_{split}.amat", rng.integers(0, 2, (n, 28, 28)))
    return root
