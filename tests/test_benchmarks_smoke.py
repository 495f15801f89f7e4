"""The benchmarks are not part of the test run, but each must still run once so it cannot rot."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_every_pytest_benchmark_runs_once():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "benchmarks/",
            "--benchmark-disable",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_results_script_writes_a_markdown_table(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import reparam_kl

    markdown, csv = tmp_path / "RESULTS.md", tmp_path / "r.csv"
    code = reparam_kl.main(
        [
            "--device",
            "cpu",
            "--sizes",
            "33x7",
            "--dtypes",
            "fp32,bf16",
            "--backends",
            "torch",
            "--markdown",
            str(markdown),
            "--csv",
            str(csv),
        ]
    )
    assert code == 0
    text = markdown.read_text()
    assert "device-to-device copy bandwidth" in text and "| torch | fwd+bwd | 33x7 | bf16 |" in text
    assert text.count("| torch |") == 4


@pytest.mark.slow
def test_gpu_session_smoke_streams_every_step_and_writes_the_summary(tmp_path):
    """The one-command GPU session, end to end on the CPU, so it works the day a GPU is lent."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_session", "--out", str(tmp_path), "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "gpu_session.csv").open()))
    steps = {row["step"] for row in rows}
    assert steps == {"tests", "floor", "runner", "bandwidth", "variants", "end-to-end", "modes"}
    modes = [row for row in rows if row["step"] == "modes"]
    assert {row["backend"] for row in modes} == {"vae:mlp/normal", "vae:mlp/normal [bf16]"}
    assert all(
        float(row["median_ms"]) > 0 and "samples/s; best batch" in row["note"] for row in modes
    )
    assert rows[0]["note"].startswith("passed")
    assert not [row for row in rows if row["note"].startswith("error")]
    timed = [row for row in rows if row["step"] == "runner"]
    assert {row["backend"] for row in timed} == {"triton", "torch"}
    assert all(float(row["median_ms"]) > 0 for row in timed)
    assert {row["backend"] for row in rows if row["step"] == "end-to-end"} == {
        "torch",
        "compile",
        "triton",
    }
    summary = (tmp_path / "RESULTS-gpu.md").read_text()
    assert "## Targets" in summary and "## end-to-end" in summary


def test_loop_overhead_script_compares_both_loops(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import loop_overhead

    assert loop_overhead.main(["--plugins", "mlp", "--epochs", "1", "--repeats", "1"]) == 0
    assert "mlp: bare " in capsys.readouterr().out
