"""The benchmarks are not part of the test run, but each must still run once so it cannot rot."""

from __future__ import annotations

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


def test_loop_overhead_script_compares_both_loops(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import loop_overhead

    assert loop_overhead.main(["--plugins", "mlp", "--epochs", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert (
        "mlp: bare " in out
        and "the bare loop's speed" in out
        and "validation reported apart" in out
    )


def test_iw_nll_speed_in_fresh_processes_ends_with_each_and_the_median(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.chdir(REPO.parent)  # the children find the benchmarks package all the same
    from benchmarks import iw_nll_speed

    args = ["--samples", "3", "--passes", "600", "--repeats", "1", "--hidden", "16"]
    assert iw_nll_speed.main([*args, "--processes", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("IW-NLL K=3: ") == 3 and "# summary" not in out
    table = out.split("## 3 processes: each, then the median\n")[1].splitlines()
    assert [line.split(":")[0] for line in table] == [
        "decoder at the run's batch, passes/s", "IW-NLL K=3, passes/s",
        "K=3 of the decoder, bracketed", "K=3 of the decoder, ratio of medians",
    ]  # fmt: skip
    for line in table:  # the median is of the three figures printed before it
        each, median = line.split(": ", 1)[1].split("; median ")
        values = [float(v.rstrip("%").replace(",", "")) for v in each.split()]
        assert len(values) == 3 and float(median.rstrip("%").replace(",", "")) == sorted(values)[1]


def test_iw_nll_speed_prints_both_rates_and_the_ratios(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import iw_nll_speed

    args = ["--samples", "3,7", "--passes", "2000", "--repeats", "1", "--hidden", "16"]
    assert iw_nll_speed.main(args) == 0
    out = capsys.readouterr().out
    assert "decoder at the run's batch 100" in out and "decoder at its best batch" in out
    for k in (3, 7):
        assert f"IW-NLL K={k}: " in out and "of the decoder at batch 100" in out
