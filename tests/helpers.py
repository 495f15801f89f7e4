"""Helpers shared by the test files (and the benchmarks): one place, imported from here.

Test files import nothing from one another or from ``conftest.py``, which holds only
fixtures. Helpers that build project objects import them when called: importing this module
defines no kernel before ``conftest.py`` has set the environment.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import struct
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

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


# -- the command line: in a subprocess, or in this process -------------------------------


def run_cli(
    *args: str, env_extra: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``python -m vaebench ARGS`` in a fresh process (entry points, signals, start-up)."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "vaebench", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@dataclass(frozen=True)
class Result:
    """What an in-process CLI call gave: named as ``subprocess.CompletedProcess`` names it."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _as_a_fresh_interpreter_warns() -> Iterator[list[warnings.WarningMessage]]:
    """Warnings filtered as a plain ``python`` filters them, and recorded, not shown.

    pytest filters and collects warnings itself; a subprocess would print each one on stderr,
    where it breaks the one-line contract, so the caller prints them there too.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        warnings.simplefilter("ignore", ImportWarning)
        warnings.simplefilter("ignore", ResourceWarning)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        yield caught


@contextlib.contextmanager
def _unconfigured_logging() -> Iterator[None]:
    """No root handlers (pytest's capture is one): a warning logged reaches stderr, as in a
    fresh interpreter, through ``logging.lastResort``."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        yield
    finally:
        root.handlers[:] = saved


def cli(capsys, *args: str) -> Result:
    """``vaebench ARGS`` through ``vaebench.cli.main`` in this process (seconds faster).

    The exit code is what ``main`` returns, or the code of the ``SystemExit`` it raises
    (argparse's usage errors, ``--help``), mapped as the interpreter maps it; stdout and
    stderr are what it printed, warnings included. An exception that escapes ``main``
    escapes here too: the test fails with its traceback, as the subprocess would have.
    Environment and working directory: set them with ``monkeypatch`` (the ``vaebench_cli``
    fixture does).
    """
    from vaebench.cli import main

    capsys.readouterr()  # drop what the test printed before
    with _as_a_fresh_interpreter_warns() as caught, _unconfigured_logging():
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
    out, err = capsys.readouterr()
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, exit 1
        err, code = f"{err}{code}\n", 1
    for w in caught:
        err += warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
    return Result(code, out, err)


# -- plugins installed as distributions --------------------------------------------------


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


# -- data files in their published formats ------------------------------------------------


def write_amat(path, images: np.ndarray) -> None:
    """Binarized MNIST ``.amat`` as the original: row-major pixels, single spaces, every line
    ending in a newline."""
    lines = [" ".join(str(int(v)) for v in image.ravel()) + "\n" for image in images]
    path.write_text("".join(lines))


def write_idx(path, array: np.ndarray, *, compress: bool = False) -> None:
    """IDX as published: magic 0 0 type ndim, big-endian dimensions, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


# -- results of runs that never ran ---------------------------------------------------------


def rows_for(values: dict[str, list[float]], *, speed: list[float] | None = None) -> list[dict]:
    """Result rows of one model per plugin, one row per seed, with the IW-NLLs given."""
    rows = []
    for plugin, nlls in values.items():
        for seed, nll in enumerate(nlls):
            rows.append(
                {
                    "model": "vae",
                    "plugin": plugin,
                    "prior": "normal",
                    "status": "ok",
                    "seed": seed,
                    "dataset": "digits",
                    "likelihood": "bernoulli",
                    "iw_samples": 100,
                    "iw_nll": nll,
                    "train_samples_per_s": 1000.0 if speed is None else speed[seed],
                }
            )
    return rows


def planted_run(tmp_path, name: str, rows: list[dict]):
    """A run folder holding only the results ``rows``."""
    from vaebench.io import write_results

    folder = tmp_path / name
    folder.mkdir()
    write_results(folder, rows)
    return folder


# -- models and objectives with known behaviour -----------------------------------------------

TINY_SHAPE = (1, 3, 4)
TINY_LATENT = 5


def tiny_vae(likelihood=None):
    """An MLP VAE on (1, 3, 4) inputs with 5 latents, in eval mode, on the torch kernel."""
    from vaebench.model import VAE
    from vaebench.plugins.likelihoods import Bernoulli
    from vaebench.plugins.mlp import MLPDecoder, MLPEncoder
    from vaebench.plugins.priors import StandardNormalPrior

    model = VAE(
        MLPEncoder(TINY_SHAPE, TINY_LATENT, hidden=16),
        MLPDecoder(TINY_SHAPE, TINY_LATENT, hidden=16),
        StandardNormalPrior(TINY_LATENT),
        likelihood or Bernoulli(TINY_SHAPE),
        latent_dim=TINY_LATENT,
        kernel_backend="torch",
    )
    return model.eval()


class Recorded:
    """An objective whose per-example values are known: loss = mean of the inputs' sums."""

    variational = True

    def loss(self, model, x, step):
        value = x.flatten(1).sum(1) + 0 * sum(p.sum() for p in model.parameters())
        return value.mean(), {"recon": value, "kl": 2 * value}


class NaNAfter(nn.Module):
    """An encoder that starts returning NaN at its ``after``-th training call."""

    def __init__(self, input_shape, latent_dim, after: int = 3):
        super().__init__()
        self.inner = nn.Sequential(
            nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), 2 * latent_dim)
        )
        self.calls, self.after = 0, after

    def forward(self, x):
        if self.training:
            self.calls += 1
        mu, logvar = self.inner(x).chunk(2, dim=-1)
        if self.calls >= self.after:
            mu = mu * float("nan")
        return mu, logvar
