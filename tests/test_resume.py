"""Long runs survive interruption: a run killed mid-training and resumed with ``--resume``
ends with the figures of an uninterrupted run of the same seed, bit for bit on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli
from vaebench.schema import columns_of
from vaebench.train import TrainingState, train

# Slow enough per epoch (256 steps) that a kill lands mid-run; small enough for seconds.
RESUMABLE = (
    "--dataset", "synthetic", "-D", "n_train=2048", "-D", "n_test=64",
    "--batch-size", "16", "--epochs", "5", "--iw-samples", "8", "--timing-min-time", "0.01",
    "--optimizer", "adamnormgrad", "--lr-schedule", "multistep", "-S", "milestones=2,4",
    "--binarize", "dynamic", "--patience", "5", "--seed", "3",
)  # fmt: skip


def _quality(out: Path) -> tuple[list[dict], dict]:
    """Every row's quality and settings figures (no timings), and the histories."""
    rows = json.loads((out / "results.json").read_text())
    keys = [
        c.key for g in ("quality", "samples", "setting", "status") for c in columns_of(g, rows[0])
    ]
    keys = [k for k in keys if k != "parameters"] + ["parameters"]
    return [{k: r.get(k) for k in keys} for r in rows], json.loads(
        (out / "history.json").read_text()
    )


def _kill_after_epochs(args: list[str], state_dir: Path, epochs: int) -> None:
    """Start ``vaebench run`` and SIGKILL it once a training state holds ``epochs`` epochs."""
    child = subprocess.Popen(
        [sys.executable, "-m", "vaebench", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            states = list(state_dir.glob("*.pt"))
            if states:
                try:
                    done = len(TrainingState.load(states[0]).payload["history"])
                except Exception:  # replaced while we read it: look again
                    done = 0
                if done >= epochs:
                    child.send_signal(signal.SIGKILL)
                    break
            if child.poll() is not None:
                pytest.fail("the run finished before it could be killed mid-way")
            time.sleep(0.02)
        else:
            pytest.fail("no training state appeared")
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_a_run_killed_mid_training_resumes_to_the_uninterrupted_figures(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert run_cli("run", *RESUMABLE, "--out", str(whole), "-q").returncode == 0
    _kill_after_epochs(["run", *RESUMABLE, "--out", str(broken), "-q"], broken / "training", 2)
    assert not (broken / "results.json").exists()  # killed inside training, before any row
    resumed = run_cli("run", "--resume", str(broken), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert _quality(broken) == _quality(whole)
    assert not (broken / "training").exists()  # the finished model's state is dropped


@pytest.mark.parametrize("precision", ["fp32", "fp16"])  # fp16: the scaler's state too
def test_train_continues_from_its_state_bit_for_bit(tmp_path, precision):
    """In process: an interruption after epoch 2 (a KeyboardInterrupt from the loop), then
    the same call again, equals one uninterrupted call: weights, history, best epoch."""
    from tests.helpers import TINY_SHAPE, tiny_vae
    from vaebench.data import sample_binary
    from vaebench.modes import Mode
    from vaebench.registry import load_registry
    from vaebench.step import StepSettings

    registry = load_registry(entry_points=False)
    from vaebench.config import RunConfig

    config = RunConfig(
        optimizer="rmsprop",
        lr=1e-3,
        lr_schedule="plateau",
        schedule_options={"factor": 0.5, "patience": 0},
    )
    settings = StepSettings.of(config, registry)
    torch.manual_seed(0)
    x = torch.rand(96, *TINY_SHAPE)
    x_valid = torch.rand(24, *TINY_SHAPE).bernoulli()

    def fit(state_path, stop_at=None):
        from vaebench.plugins.objectives import vae

        torch.manual_seed(1)
        model, objective = tiny_vae().train(), vae()
        steps = []

        def on_step():
            steps.append(1)
            if stop_at is not None and len(steps) == stop_at:
                raise KeyboardInterrupt

        mode = Mode(precision)
        with mode.numerics():
            outcome = train(
                model, x, objective=objective, epochs=5, batch_size=16, settings=settings,
                seed=7, x_valid=x_valid, batch_transform=sample_binary, on_step=on_step,
                state_path=state_path, mode=mode,
            )  # fmt: skip
        return model, outcome

    reference, expected = fit(None)
    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(path, stop_at=6 * 2 + 3)  # 6 steps an epoch: inside epoch 3
    assert len(TrainingState.load(path).payload["history"]) == 2
    model, outcome = fit(path)
    assert outcome.history == expected.history
    assert outcome.best_epoch == expected.best_epoch and outcome.steps == expected.steps
    pairs = zip(model.state_dict().items(), reference.state_dict().items(), strict=True)
    for (name, a), (_, b) in pairs:
        assert torch.equal(a, b), name
    assert [h["lr"] for h in outcome.history] == [h["lr"] for h in expected.history]


def test_a_corrupt_training_state_is_one_line(tmp_path):
    path = tmp_path / "state.pt"
    path.write_bytes(b"not a state")
    from vaebench.errors import VaebenchError

    with pytest.raises(VaebenchError, match=r"unreadable training state.*delete it") as info:
        TrainingState.load(path)
    assert "\n" not in str(info.value)


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    out = tmp_path / "run"
    args = ("--dataset", "synthetic", "-D", "n_train=64", "-D", "n_test=16", "--epochs", "1",
            "--iw-samples", "2", "--timing-min-time", "0.01")  # fmt: skip
    assert run_cli("run", *args, "--out", str(out), "-q").returncode == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    again = run_cli("run", "--resume", str(out), "-q")
    assert again.returncode == 0, again.stderr
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--epochs", "3"), "--resume continues .* as it was configured; drop --epochs"),
        ((), "no config.json there"),
    ],
)
def test_resume_refuses_what_it_cannot_continue(tmp_path, extra, needle):
    folder = tmp_path / "run"
    folder.mkdir()
    result = run_cli("run", "--resume", str(folder), *extra)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    import re

    assert re.search(needle, result.stderr), result.stderr
    assert list(folder.iterdir()) == []


def test_resume_refuses_a_config_from_another_version(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"no_such_setting": 1}))
    result = run_cli("run", "--resume", str(folder))
    assert result.returncode == 2
    assert "is not this vaebench's" in result.stderr and "Traceback" not in result.stderr
    assert sorted(os.listdir(folder)) == ["config.json"]
