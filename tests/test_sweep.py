"""Sweeps: expansion, a tiny real sweep, kill and resume, aggregation by hand, Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from vaebench.cli import main
from vaebench.errors import ConfigError
from vaebench.sweep import expand, load_sweep

TINY = """
[fixed]
dataset = "synthetic"
dataset_options = {{ n_train = {n_train}, n_test = 32 }}
epochs = {epochs}
iw_samples = 4
timing_min_time = 0.01

[axes]
plugins = ["mlp", "conv"]
seed = [{seeds}]
"""


def sweep_file(tmp_path: Path, *, n_train: int = 96, epochs: int = 2, seeds: str = "0, 1") -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(TINY.format(n_train=n_train, epochs=epochs, seeds=seeds))
    return path


def test_expansion_and_validation(tmp_path, registry):
    cells = expand(load_sweep(sweep_file(tmp_path)), registry)
    assert [c.cell_id for c in cells] == [
        "0000-plugins=mlp_seed=0",
        "0001-plugins=mlp_seed=1",
        "0002-plugins=conv_seed=0",
        "0003-plugins=conv_seed=1",
    ]
    assert cells[2].settings["plugins"] == ["conv"] and cells[2].settings["epochs"] == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[axes]\nlatent-dim = [8, 0]\n")
    with pytest.raises(ConfigError, match=r"latent-dim: must be >= 1, got 0"):
        load_sweep(bad)
    bad.write_text("[axes]\nwidth = [1]\n")
    with pytest.raises(ConfigError, match="unknown setting 'width'"):
        load_sweep(bad)
    bad.write_text("[axes\n")
    with pytest.raises(ConfigError, match="not a valid TOML file"):
        load_sweep(bad)
    bad.write_text('[axes]\nprior = ["normal", "wishart"]\n')
    with pytest.raises(ConfigError, match="unknown prior 'wishart'"):
        expand(load_sweep(bad), registry)


def test_dry_run_lists_cells_without_running(tmp_path, capsys):
    assert (
        main(["sweep", str(sweep_file(tmp_path)), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    )
    assert "4 cells" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_local_sweep_aggregates_over_seeds_like_a_hand_computation(tmp_path):
    out = tmp_path / "out"
    assert (
        main(["sweep", str(sweep_file(tmp_path)), "--workers", "2", "--out", str(out), "--quiet"])
        == 0
    )
    sweep = pd.read_csv(out / "sweep.csv")
    assert len(sweep) == 4 and sorted(sweep["cell_id"]) == sorted(set(sweep["cell_id"]))
    assert (sweep["cell_status"] == "ok").all()
    summary = pd.read_csv(out / "summary.csv").set_index("plugin")
    for plugin in ("mlp", "conv"):
        values = []
        for seed in (0, 1):
            folder = out / "cells" / f"{'0000' if plugin == 'mlp' and seed == 0 else ''}"
            del folder
            (cell,) = [
                p for p in (out / "cells").iterdir() if f"plugins={plugin}_seed={seed}" in p.name
            ]
            values.append(json.loads((cell / "run" / "results.json").read_text())[0]["iw_nll"])
        assert summary.loc[plugin, "iw_nll_mean"] == pytest.approx(statistics.mean(values))
        assert summary.loc[plugin, "iw_nll_std"] == pytest.approx(statistics.stdev(values))
        assert summary.loc[plugin, "iw_nll_count"] == 2 and summary.loc[plugin, "cells"] == 2
    # The report understands a sweep: summary with error bars over seeds, every cell.
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    for section in ("sweep", "summary", "summary-chart", "cells"):
        assert f'<section id="{section}">' in html
    mlp_iw = summary.loc["mlp", "iw_nll_mean"], summary.loc["mlp", "iw_nll_std"]
    assert f"{mlp_iw[0]:.2f} ± {mlp_iw[1]:.2f} (n=2)" in html
    # An existing sweep folder is not overwritten by accident.
    assert main(["sweep", str(sweep_file(tmp_path)), "--out", str(out), "--quiet"]) == 2


@pytest.mark.slow
def test_killed_sweep_resumes_with_nothing_lost_or_repeated(tmp_path):
    spec = sweep_file(tmp_path, n_train=512, epochs=6, seeds="0, 1, 2")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "vaebench",
        "sweep",
        str(spec),
        "--workers",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("cells/*/done.json"))) < 2:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/done.json")}
    assert 2 <= len(finished) < 6, (
        f"the kill must land mid-sweep, {len(finished)} of 6 cells were done"
    )

    assert main(["sweep", str(spec), "--out", str(out), "--resume", "--quiet"]) == 0
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/done.json")}
    assert len(after) == 6
    assert all(after[name] == stamp for name, stamp in finished.items()), (
        "finished cells were run again"
    )
    sweep = pd.read_csv(out / "sweep.csv")
    assert len(sweep) == 6 and sweep["cell_id"].is_unique and (sweep["status"] == "ok").all()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["iw_nll_count"]) == [3, 3]


@pytest.mark.slow
def test_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path):
    path = tmp_path / "fail.toml"
    path.write_text(
        "[fixed]\nepochs = 1\niw_samples = 2\ntiming_min_time = 0.01\n"
        f'[axes]\ndataset = ["synthetic", "{tmp_path / "corrupt.npz"}"]\n'
    )
    (tmp_path / "corrupt.npz").write_bytes(b"not an archive")
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 1
    sweep = pd.read_csv(out / "sweep.csv")
    statuses = dict(
        zip(sweep["axis.dataset"].str.contains("corrupt"), sweep["cell_status"], strict=True)
    )
    assert statuses[False] == "ok" and statuses[True].startswith("error: DataError")


def test_ray_executor_without_ray_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = main(
        ["sweep", str(sweep_file(tmp_path)), "--executor", "ray", "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "pip install 'vaebench[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# A cluster local to the test: no usage reporting, no token (both ends run here).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def ray_cli(*args: str, cwd: Path | None = None) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ray")), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, **RAY_ENV},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_a_sweep_on_a_ray_cluster_needs_no_shared_folder(tmp_path, monkeypatch):
    """A real two-node cluster: a head that runs nothing (0 CPUs) and a worker node started
    separately in its own folder. The cells run on the worker, are never told where the sweep
    folder is, and every file of theirs arrives through the driver."""
    ray = pytest.importorskip(
        "ray", reason="Ray is not installed (pip install 'vaebench[ray]'); .ci/run installs it"
    )
    from vaebench.plugins.executors import RayExecutor

    port = free_port()
    head = f"127.0.0.1:{port}"
    worker_home = tmp_path / "worker-node"
    worker_home.mkdir()
    submitted = []
    real_submit = RayExecutor.submit

    def recording_submit(self, fn, *args):
        submitted.append(args)
        return real_submit(self, fn, *args)

    monkeypatch.setattr(RayExecutor, "submit", recording_submit)
    for key, value in RAY_ENV.items():
        monkeypatch.setenv(key, value)
    # A short folder of its own: Ray's socket paths must fit AF_UNIX's 107 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="vbray-", dir="/tmp")
    ray_cli("start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
            f"--temp-dir={ray_tmp}")  # fmt: skip
    try:
        ray_cli("start", f"--address={head}", "--num-cpus=2", cwd=worker_home)
        out = tmp_path / "sweep"
        args = ["sweep", str(sweep_file(tmp_path)), "--executor", "ray", "--ray-address", head]
        assert main([*args, "--out", str(out), "--quiet"]) == 0
    finally:
        if ray.is_initialized():
            ray.shutdown()
        ray_cli("stop", "--force")
        shutil.rmtree(ray_tmp, ignore_errors=True)
    sweep = pd.read_csv(out / "sweep.csv")
    assert len(sweep) == 4 and (sweep["cell_status"] == "ok").all()
    assert list(pd.read_csv(out / "summary.csv")["iw_nll_count"]) == [2, 2]
    assert len(submitted) == 4
    assert not any(str(out) in json.dumps(args) for args in submitted)  # no path to write to
    for cell in (out / "cells").iterdir():
        done = json.loads((cell / "done.json").read_text())
        assert done["worker"].split(":")[1] != str(os.getpid())  # ran on the worker node
        run = cell / "run"
        for name in ("results.csv", "results.json", "config.json", "history.json"):
            assert (run / name).is_file(), f"{cell.name}: {name} did not arrive"
        assert len(list((run / "checkpoints").glob("*.pt"))) == 1
    assert list(worker_home.iterdir()) == []  # the worker node left nothing in its folder


def visible_devices_together(barrier) -> str:
    """Runs in an executor worker: which GPU was this worker pinned to?

    The barrier holds each task until the other one runs too, so the two tasks are
    necessarily on two different workers.
    """
    barrier.wait(timeout=120)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


def test_local_executor_pins_one_gpu_per_worker(monkeypatch):
    import multiprocessing

    from vaebench.plugins import executors

    monkeypatch.setattr(executors, "_visible_gpus", lambda: 2)
    with multiprocessing.get_context("spawn").Manager() as manager:
        barrier = manager.Barrier(2)
        with executors.local_executor(workers=4) as pool:  # capped at one worker per GPU
            assert pool._max_workers == 2
            futures = [pool.submit(visible_devices_together, barrier) for _ in range(2)]
            seen = sorted(future.result(timeout=180) for future in futures)
    assert seen == ["0", "1"]


def test_a_damaged_cell_result_is_reported_not_fatal(tmp_path):
    from vaebench.io import write_json
    from vaebench.sweep import Cell, aggregate

    cells = [Cell("0000-a", {"seed": 0}, {"seed": 0}), Cell("0001-b", {"seed": 1}, {"seed": 1})]
    for cell in cells:
        write_json(cell.folder(tmp_path) / "done.json", {"cell_id": cell.cell_id, "status": "ok"})
        (cell.folder(tmp_path) / "run").mkdir()
    (cells[0].folder(tmp_path) / "run" / "results.json").write_text("{broken")
    write_json(cells[1].folder(tmp_path) / "run" / "results.json", [{"model": "vae"}])
    sweep, _ = aggregate(tmp_path, cells)
    assert list(sweep["status"]) == ["unreadable", "unreadable"]
    assert "unreadable JSON" in sweep.loc[0, "cell_status"]
    assert "'plugin' must be text" in sweep.loc[1, "cell_status"]


def model_row(plugin: str, iw_nll: float, status: str = "ok") -> dict:
    base = {"model": "vae", "plugin": plugin, "prior": "normal", "status": status}
    return {**base, "iw_nll": iw_nll, "kl_per_dim": [0.5, 0.25]}


def write_cell(out: Path, cell, status: str | None, rows: list[dict] | None) -> None:
    from vaebench.io import write_json

    folder = cell.folder(out)
    (folder / "run").mkdir(parents=True)
    if status is not None:
        write_json(folder / "done.json", {"cell_id": cell.cell_id, "status": status})
    if rows is not None:
        write_json(folder / "run" / "results.json", rows)


def test_aggregation_of_hand_made_cells_against_a_hand_computation(tmp_path):
    """No training: cells written by hand. Groups keep the grid's order and their NaN keys,
    a cell that failed is counted and never averaged, and an unfinished cell's stale
    results are not read."""
    from vaebench.sweep import Cell, aggregate

    def cell(i: int, lr: float, seed: int) -> Cell:
        axes = {"lr": lr, "seed": seed, "plugins": ["mlp", "conv"]}
        return Cell(f"{i:04d}", axes, axes)

    cells = [cell(0, 0.1, 0), cell(1, 0.1, 1), cell(2, 0.01, 0), cell(3, 0.01, 1), cell(4, 0.5, 0)]
    write_cell(tmp_path, cells[0], "ok", [model_row("mlp", 90.0), model_row("conv", 80.0)])
    write_cell(
        tmp_path,
        cells[1],
        "ok",
        [model_row("mlp", 94.0), model_row("conv", 81.0, "diverged at step 3")],
    )
    write_cell(tmp_path, cells[2], "ok", [model_row("mlp", 100.0), model_row("conv", 70.0)])
    write_cell(tmp_path, cells[3], "error: killed", [model_row("mlp", 1.0)])  # stale rows
    write_cell(tmp_path, cells[4], None, None)  # never run
    sweep, summary = aggregate(tmp_path, cells)
    written = pd.read_csv(tmp_path / "sweep.csv")
    assert list(written.columns) == list(sweep.columns)  # no index column
    assert "kl_per_dim" not in written and set(written["axis.plugins"]) == {"mlp,conv"}
    assert list(written["status"].fillna("-")) == [
        *("ok", "ok", "ok", "diverged at step 3", "ok", "ok"),
        *("error: killed", "not run"),
    ]
    assert list(written["cell_status"])[-2:] == ["error: killed", "not run"]
    assert list(written["cell_id"])[-2:] == [3, 4]  # one row each, no stale model rows
    table = pd.read_csv(tmp_path / "summary.csv")
    assert list(table.columns) == list(summary.columns)
    keys = ["axis.lr", "axis.plugins", "model", "plugin", "prior"]
    assert list(table.columns[:5]) == keys
    got = table.fillna({"plugin": "-"})
    assert list(zip(got["axis.lr"], got["plugin"], got["cells"], got["finished"], strict=True)) == [
        (0.1, "mlp", 2, 2),
        (0.1, "conv", 2, 1),  # the diverged model: counted, not averaged
        (0.01, "mlp", 1, 1),
        (0.01, "conv", 1, 1),
        (0.01, "-", 1, 0),  # the failed cell's row, its NaN identity kept as a group
        (0.5, "-", 1, 0),
    ]
    mlp = table.iloc[0]
    assert (mlp["iw_nll_mean"], mlp["iw_nll_count"]) == (92.0, 2)
    assert mlp["iw_nll_std"] == pytest.approx(statistics.stdev([90.0, 94.0]))
    assert table.iloc[1]["iw_nll_mean"] == 80.0 and table.iloc[1]["iw_nll_count"] == 1


def test_a_summary_without_axes_or_status_is_one_group_with_nothing_finished():
    from vaebench.seeds import summarize

    plain = summarize(pd.DataFrame({"iw_nll": [1.0, 2.0]}))
    assert list(plain["all"]) == ["all"] and list(plain["cells"]) == [2]
    assert list(plain["finished"]) == [0]
    ok = summarize(pd.DataFrame({"iw_nll": [1.0, 3.0], "status": ["ok", "ok"]}))
    assert list(ok["all"]) == ["all"] and ok.loc[0, "iw_nll_mean"] == 2.0
