"""The command line end to end: tables, files, exit codes and one-line errors."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers import FAST_CLI as FAST
from tests.helpers import run_cli
from vaebench.cli import main


@pytest.mark.slow
def test_run_prints_both_tables_and_writes_files(tmp_path):
    out = tmp_path / "run"
    done = run_cli("run", "--plugins", "conv,mlp", "--prior", "normal", *FAST, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "Quality on synthetic" in done.stdout and "Throughput on cpu" in done.stdout
    assert "IW-NLL" in done.stdout and "train samples/s" in done.stdout
    for name in ("results.csv", "results.json", "config.json", "environment.json", "history.json"):
        assert (out / name).is_file(), name
    frame = pd.read_csv(out / "results.csv")
    assert list(frame["plugin"]) == ["conv", "mlp"]


@pytest.mark.slow
def test_quiet_prints_nothing(tmp_path):
    """A fresh process: nothing printed from start-up on (imports included)."""
    done = run_cli("run", "--plugins", "mlp", *FAST, "--out", str(tmp_path / "q"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_default_out_dir_is_under_runs(tmp_path, vaebench_cli):
    done = vaebench_cli("run", "--plugins", "mlp", *FAST, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "results.csv").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--plugins", "mlp,transformer"], "unknown plugin 'transformer'"),
        (["--prior", "vamp9"], "unknown prior 'vamp9'; available: flow, mog, normal, vamp"),
        (["--dataset", "cifar"], "unknown dataset 'cifar'; available: digits, synthetic"),
        (
            ["--likelihood", "poisson"],
            "unknown likelihood 'poisson'; available: bernoulli, categorical, dlogistic, gaussian",
        ),
        (
            ["--dataset", "synthetic", "-D", "n_train=0"],
            "synthetic: option n_train must be an integer >= 1",
        ),
        (["--dataset", "synthetic", "-D", "colour=red"], "-D colour: not an option of dataset"),
        (["--model", "gan"], "unknown model 'gan'; available: ae, dae, iwae, sae, vae"),
        (
            ["--dataset", "synthetic", "-L", "bins=4"],
            "-L bins: not an option of likelihood 'bernoulli'; accepted: none",
        ),
        (
            ["--likelihood", "categorical", "-L", "bins=1", "--dataset", "synthetic"],
            "bins must be >= 2",
        ),
        (
            ["--model", "dae", "--corruption", "1.5"],
            "-M: model 'dae' rejected {'corruption': 1.5}: corruption must be < 1, got 1.5",
        ),
        (
            ["-M", "componets=5"],
            "-M componets: not an option of model 'vae'; accepted: beta, kl_warmup",
        ),
        (
            ["--model", "ae,vae", "-M", "beta=-1"],
            "-M: model 'vae' rejected {'beta': -1}: beta must be >= 0, got -1",
        ),
        (
            ["--model", "iwae", "--iwae-samples", "2.5"],
            "iwae_samples must be a whole number, got 2.5",
        ),
        (["-P", "components"], "--prior-option: expected KEY=VALUE"),
    ],
)
def test_unknown_names_exit_2_with_one_line(args, needle, tmp_path, capsys):
    code = main(["run", *args, "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--epochs", "-1"],
        ["--latent-dim", "0"],
        ["--batch-size", "two"],
        ["--lr", "0"],
        ["--lr", "nan"],
        ["--iw-samples", "0"],
        ["--device", "tpu"],
        ["--kernel", "cuda"],
    ],
)
def test_invalid_values_name_their_flag_on_one_line(args, capsys):
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vaebench: error: {args[0]}: ") and len(err.splitlines()) == 1


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--no-such-flag"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "--no-such-flag" in err and len(err.splitlines()) == 1


def test_failed_model_gives_exit_1_and_a_line_on_stderr(tmp_path, vaebench_cli):
    done = vaebench_cli(
        "run", "--plugins", "mlp", *FAST, "--lr", "1e30", "--out", str(tmp_path / "d"), "--quiet"
    )
    frame = pd.read_csv(tmp_path / "d" / "results.csv")
    assert frame.loc[0, "status"].startswith("diverged at step")
    assert done.returncode == 1
    assert "mlp/normal: diverged at step" in done.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_request_without_cuda_is_a_clear_error(tmp_path, capsys):
    code = main(["run", "--device", "cuda", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "sees no CUDA device" in err and "--device cpu" in err
