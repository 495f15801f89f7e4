"""Experiment trackers against the real libraries: the MLflow file store read back through
MLflow's own client, TensorBoard event files through TensorBoard's own reader. A tracker that
breaks mid-run costs a warning, never the run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar

import pytest

from tests.helpers import FAST_CLI, run_cli
from vaebench import hookimpl
from vaebench.config import RunConfig
from vaebench.errors import ConfigError
from vaebench.present.report import Reporting
from vaebench.registry import Owner
from vaebench.resolve import resolve_config
from vaebench.runner import run
from vaebench.tracking import EXTRAS, Trackers

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")


def fast_config(tmp_path: Path, **settings) -> RunConfig:
    return RunConfig(
        dataset="synthetic",
        dataset_options={"n_train": 48, "n_test": 16, "n_valid": 8},
        epochs=2,
        iw_samples=2,
        timing_min_time=0.01,
        out=str(tmp_path / "run"),
        **settings,
    )


@pytest.mark.slow
def test_mlflow_holds_a_parent_run_and_one_nested_run_per_model(registry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default store: ./mlruns (an SQLite file and artifacts)
    config = resolve_config(
        fast_config(tmp_path, plugins=["mlp", "conv"], track=["mlflow"]), registry
    )
    rows = run(config, registry, Reporting())
    assert sorted(p.name for p in (tmp_path / "mlruns").iterdir()) == ["artifacts", "mlflow.db"]
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("vaebench")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.data.params["epochs"] == "2" and parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "results.csv",
        "config.json",
        "report.html",
    }
    by_name = {r.info.run_name: r for r in children}
    for row in rows:
        child = by_name[f"vae:{row['plugin']}/normal"]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["plugin"] == row["plugin"]
        assert child.data.metrics["iw_nll"] == pytest.approx(row["iw_nll"])
        history = client.get_metric_history(child.info.run_id, "valid/neg_elbo")
        saved = json.loads((tmp_path / "run" / "history.json").read_text())
        expected = [e["valid_neg_elbo"] for e in saved[f"vae:{row['plugin']}/normal"]]
        assert [m.step for m in history] == [1, 2]
        assert [m.value for m in history] == pytest.approx(expected)
        artifacts = [a.path for a in client.list_artifacts(child.info.run_id)]
        assert artifacts == [Path(row["checkpoint"]).name]


def test_tensorboard_writes_curves_hparams_and_image_grids(registry, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = resolve_config(fast_config(tmp_path, track=["tensorboard"]), registry)
    (row,) = run(config, registry, Reporting())
    folders = list((tmp_path / "run" / "tensorboard").iterdir())
    assert [f.name for f in folders] == ["vae-mlp__normal"]
    events = EventAccumulator(str(folders[0]), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/kl", "valid/neg_elbo", "valid/loss"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert {"reconstructions", "prior_samples"} <= set(tags["images"])
    hparams = EventAccumulator(str(folders[0]))  # add_hparams writes a summary of its own
    hparams.Reload()
    assert "iw_nll" in hparams.Tags()["scalars"]
    assert hparams.Scalars("iw_nll")[0].value == pytest.approx(row["iw_nll"], rel=1e-6)


class Broken:
    """A tracker whose store goes away after the first model."""

    calls: ClassVar[list[str]] = []

    def __init__(self, out, uri=None):
        pass

    def start(self, name, settings):
        Broken.calls.append("start")

    def log_model(self, record):
        Broken.calls.append(record.label)
        raise OSError("the tracking server is gone")

    def finish(self, artifacts):
        Broken.calls.append("finish")


def test_a_tracker_that_fails_mid_run_warns_once_and_the_run_completes(registry, tmp_path, capsys):
    class Plugin:
        @staticmethod
        @hookimpl
        def vaebench_register_trackers(register):
            register("broken", Broken)

    registry.add_plugin(Plugin(), Owner("broken-dist", "0.1", "broken"))
    Broken.calls = []
    config = resolve_config(
        fast_config(tmp_path, plugins=["mlp", "conv"], track=["broken"]), registry
    )
    rows = run(config, registry, Reporting())
    assert [r["status"] for r in rows] == ["ok", "ok"]  # the run is whole
    assert Broken.calls == ["start", "vae:mlp/normal"]  # dropped after its first failure
    err = capsys.readouterr().err
    assert err.count("tracker 'broken' failed (OSError: the tracking server is gone)") == 1


@pytest.mark.slow
@pytest.mark.parametrize("store", ["under-a-file", "server-gone"])
def test_an_unusable_store_is_a_warning_not_a_failure(tmp_path, store):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # A folder under a file, or a port nobody serves (MLflow would retry for minutes).
    uri = f"sqlite:///{blocker}/mlflow.db" if store == "under-a-file" else "http://127.0.0.1:9"
    out = tmp_path / "run"
    started = time.monotonic()
    done = run_cli(
        "run", *FAST_CLI, "--track", "mlflow", "--tracking-uri", uri, "--out", str(out), "-q"
    )
    assert done.returncode == 0, done.stderr
    assert "warning: tracker 'mlflow' failed" in done.stderr
    assert "Traceback" not in done.stderr
    assert (out / "results.csv").is_file()
    assert time.monotonic() - started < 90


def test_a_missing_tracker_library_names_the_extra_before_training(registry, tmp_path):
    class Plugin:
        @staticmethod
        @hookimpl
        def vaebench_register_trackers(register):
            def needs_a_library(out, uri=None):
                import vaebench_no_such_tracker_lib  # noqa: F401

            register("absent", needs_a_library)

    registry.add_plugin(Plugin(), Owner("absent-dist", "0.1", "absent"))
    with pytest.raises(ConfigError, match="vaebench_no_such_tracker_lib is not installed"):
        Trackers.build(["absent"], registry, out=tmp_path, uri=None)
    assert EXTRAS["mlflow"] == "vaebench[mlflow]"
    config = fast_config(tmp_path, track=["absent"])
    with pytest.raises(ConfigError, match="--track absent"):
        run(resolve_config(config, registry), registry)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on the loopback address, with its own store and artifacts."""
    import shutil
    import subprocess
    import sys
    import urllib.request

    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    command = [
        shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
        "--artifacts-destination", str(store / "artifacts"),
    ]  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=store)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "server.log").read_text()[-2000:])
            time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.mark.slow
def test_mlflow_follows_mlflow_tracking_uri_and_experiment_name(tmp_path, mlflow_server):
    """The way MLflow users point every tool at the team's server: the environment. The runs
    land on that server, under that experiment, and nothing is written to ./mlruns."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_EXPERIMENT_NAME": "team-vae"}
    out = tmp_path / "run"
    done = run_cli(
        "run", *FAST_CLI, "--plugins", "mlp,conv", "--track", "mlflow", "--out", str(out), "-q",
        env_extra=env, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    assert not (cwd / "mlruns").exists(), "the local default was used despite the environment"
    client = mlflow.tracking.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("team-vae")
    assert experiment is not None and client.get_experiment_by_name("vaebench") is None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all("neg_elbo" in c.data.metrics for c in children)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert "results.csv" in artifacts
    # --tracking-uri still wins over the environment.
    local = tmp_path / "local"
    done = run_cli(
        "run", *FAST_CLI, "--track", "mlflow", "--tracking-uri", f"sqlite:///{local}.db",
        "--out", str(tmp_path / "run2"), "-q", env_extra=env, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(client.search_runs([experiment.experiment_id])) == 3
    assert Path(f"{local}.db").is_file()
