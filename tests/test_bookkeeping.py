"""The claims behind the tables: steps taken, epoch means, the split measured, atomic writes.

Each test says which planted bug it catches.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from tests.helpers import Recorded
from vaebench import io, metrics
from vaebench.config import RunConfig
from vaebench.resolve import resolve_config
from vaebench.runner import run
from vaebench.step import StepSettings
from vaebench.train import train


def test_every_batch_takes_one_step_and_epoch_means_weight_the_short_batch(monkeypatch):
    steps = []
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1))
    x = torch.arange(10, dtype=torch.float32).view(10, 1) ** 2  # distinct values
    model = nn.Linear(1, 1)
    outcome = train(
        model,
        x,
        objective=Recorded(),
        epochs=2,
        batch_size=4,
        settings=StepSettings(lr=0.1),
        seed=0,
    )
    assert outcome.steps == 6 and len(steps) == 6  # 4 + 4 + 2 per epoch: a skipped step fails
    expected = x.sum().item() / 10  # the mean over examples, not over batches (they differ)
    for epoch, record in enumerate(outcome.history, start=1):
        assert record["epoch"] == epoch
        assert record["loss"] == pytest.approx(expected)
        assert record["recon"] == pytest.approx(expected)
        assert record["kl"] == pytest.approx(2 * expected)


def test_quality_metrics_read_the_test_split(registry, tmp_path, monkeypatch):
    seen = []
    for name in ("elbo_terms", "iw_nll"):
        original = getattr(metrics, name)

        def spy(model, x, *args, _original=original, _name=name, **kwargs):
            seen.append((_name, x.detach().clone()))
            return _original(model, x, *args, **kwargs)

        monkeypatch.setattr(metrics, name, spy)
    options = {"n_train": 48, "n_test": 24}
    config = resolve_config(
        RunConfig(
            dataset="synthetic",
            dataset_options=options,
            epochs=1,
            iw_samples=2,
            timing_min_time=0.01,
            out=str(tmp_path / "run"),
        ),
        registry,
    )
    run(config, registry)
    test_split = registry.get("dataset", "synthetic").factory(seed=0, **options).x_test
    assert {name for name, _ in seen} == {"elbo_terms", "iw_nll"}
    for name, x in seen:
        assert torch.equal(x, test_split), f"{name} read a split other than the test split"


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "results.csv"
    io.atomic_write_text(target, "old complete content\n")
    real_fdopen = os.fdopen

    class Failing:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Failing(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space"):
        io.atomic_write_text(target, "new content that never fully arrives\n" * 100)
    assert target.read_text() == "old complete content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no partial temporary
