"""One declaration of columns and options: the docs' tables, the flags and sweep files follow it."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from tests.helpers import FAST_CLI, REPO, run_cli
from vaebench import docs
from vaebench.cli import main
from vaebench.config import RunConfig, check, checked, from_text, sweep_keys
from vaebench.errors import ConfigError
from vaebench.resolve import resolve_config
from vaebench.schema import MISSING, column, columns_of, ordered_keys, row_label, row_stem


def test_docs_tables_are_generated_from_the_code():
    pages = docs.pages(REPO / "docs")
    for name in docs.BLOCKS:
        assert any(name in docs.blocks_in(page.read_text()) for page in pages), name
    assert docs.stale(pages) == [], f"docs/ out of date: run {docs.FIX}"


def test_templated_columns_expand_per_backend_and_keep_declared_order():
    rate = column("reparam_kl_triton_samples_per_s")
    assert rate is not None and rate.header == "reparam+KL triton samples/s"
    assert rate.spread == "reparam_kl_triton_spread" and rate.better == "higher"
    assert column("reparam_kl_triton_samples_per_sX") is None and column("nope") is None
    keys = ["zz_plugin_extra", "reparam_kl_torch_spread", "iw_nll", "plugin", "model", "prior"]
    assert ordered_keys(keys) == [
        "model",
        "plugin",
        "prior",
        "iw_nll",
        "reparam_kl_torch_spread",
        "zz_plugin_extra",
    ]
    shown = [
        c.key
        for c in columns_of(
            "throughput",
            ["reparam_kl_b_samples_per_s", "train_samples_per_s", "reparam_kl_a_samples_per_s"],
        )
    ]
    assert shown == [
        "train_samples_per_s",
        "reparam_kl_a_samples_per_s",
        "reparam_kl_b_samples_per_s",
    ]


def test_missing_values_and_labels_read_the_same_everywhere():
    nll = column("iw_nll")
    assert [nll.format(v) for v in (None, math.nan, "", 24.456)] == [MISSING] * 3 + ["24.46"]
    row = {"model": "vae", "plugin": "my net", "prior": "a/b"}
    assert row_label(row) == "vae:my net/a/b"
    assert row_stem(row) == "vae-my_net__a_b"


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("epochs", 2.5, "epochs: expected a whole number, got 2.5"),
        ("epochs", -1, "epochs: must be >= 1, got -1"),
        ("epochs", "ten", "epochs: expected a whole number, got 'ten'"),
        ("epochs", True, "epochs: expected a whole number, got True"),
        ("seed", -3, "seed: must be >= 0, got -3"),
        ("timing_min_time", math.inf, "timing_min_time: must be a finite number, got inf"),
        ("lr", 0, "lr: must be > 0, got 0"),
        ("corruption", [[1]], "corruption: expected a table of KEY = number, text or list"),
        ("device", "tpu", "device: 'tpu' is not one of: auto, cpu, cuda"),
        ("plugins", [], "plugins: needs at least one name"),
        ("plugins", [1], "plugins: expected a name, a comma list or a list of names"),
        ("prior_options", {"k": [[1]]}, "prior_options: expected a table"),
        ("arch_options", {"hidden": []}, "arch_options: expected a table"),
        ("quiet", True, "unknown setting 'quiet'"),
        ("out", "x", "unknown setting 'out'"),
    ],
)
def test_sweep_values_are_checked_like_flags(key, value, needle):
    with pytest.raises(ConfigError, match=r"^sweep\.toml: ") as info:
        checked({key: value}, "sweep.toml")
    assert needle in str(info.value)


def test_flag_and_sweep_key_share_one_validation():
    for name, text, typed in (("epochs", "0", 0), ("lr", "-1", -1.0), ("seed", "-2", -2)):
        with pytest.raises(ValueError) as from_flag:
            from_text(name, text)
        with pytest.raises(ValueError) as from_file:
            check(name, typed)
        assert str(from_flag.value) == str(from_file.value)
    assert checked({"plugin": "mlp, conv,mlp", "kernel-backend": "torch"}, "f") == {
        "plugins": ["mlp", "conv"],
        "kernel": "torch",
    }
    assert {"prior", "priors", "latent_dim", "kernel_backend"} <= set(sweep_keys())
    assert RunConfig.from_mapping({"epochs": 3}, "f").epochs == 3


def test_bad_sweep_file_fails_the_dry_run_naming_the_key(tmp_path, capsys):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[fixed]\nepochs = "ten"\n[axes]\nseed = [0, 1]\n')
    assert main(["sweep", str(sweep), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"vaebench: error: {sweep}: epochs: expected a whole number, got 'ten'"
    sweep.write_text("[axes]\nseed = [0, -1]\n")
    assert main(["sweep", str(sweep), "--dry-run"]) == 2
    assert "seed: must be >= 0, got -1" in capsys.readouterr().err


@pytest.mark.slow
def test_a_registered_dataset_name_never_means_a_folder(tmp_path):
    (tmp_path / "synthetic").mkdir()  # a folder that shadowed the dataset before
    done = run_cli("run", *FAST_CLI, "--out", "o", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = run_cli("run", "--dataset", "mnist", "--quiet", cwd=tmp_path)
    assert done.returncode == 2 and "unknown dataset 'mnist'" in done.stderr
    assert "./mnist" in done.stderr and "Traceback" not in done.stderr


def test_help_and_config_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from vaebench.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['run', '--help'])\n"
        "    except SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_each_sweep_cell_checks_its_option_keys_before_anything_runs(tmp_path, registry):
    from vaebench.sweep import expand, load_sweep

    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        '[fixed]\nprior_options = {pseudo_inputs = 20}\n[axes]\nprior = ["vamp", "normal"]\n'
    )
    with pytest.raises(
        ConfigError, match=r"cell 1 .*-P pseudo_inputs: not an option of prior 'normal'"
    ):
        expand(load_sweep(sweep), registry)
    sweep.write_text('[fixed]\nprior_options = {pseudo_inputs = 20}\n[axes]\nprior = ["vamp"]\n')
    assert len(expand(load_sweep(sweep), registry)) == 1


def test_results_files_carry_every_declared_column(registry, tmp_path):
    import pandas as pd

    from vaebench.runner import run
    from vaebench.schema import CORE_KEYS

    config = resolve_config(
        RunConfig(
            models=["ae"],
            dataset="synthetic",
            dataset_options={"n_train": 32, "n_test": 8},
            epochs=1,
            timing_min_time=0.01,
            out=str(tmp_path / "ae"),
        ),
        registry,
    )
    run(config, registry)
    frame = pd.read_csv(tmp_path / "ae" / "results.csv")
    assert set(CORE_KEYS) <= set(frame.columns)  # an AE-only run still has an iw_nll column
    assert frame["iw_nll"].isna().all() and frame["recon_nll"].notna().all()


def test_history_epochs_must_be_numbered(tmp_path):
    from vaebench.io import check_history

    with pytest.raises(ConfigError.__mro__[1], match="integer 'epoch'"):
        check_history({"vae:mlp/normal": [{"loss": 2.0}]}, tmp_path / "history.json")
    check_history({"vae:mlp/normal": [{"epoch": 1, "loss": 2.0, "kl": None}]}, tmp_path / "h")


def test_gpu_session_summary_survives_failed_measurements():
    sys.path.insert(0, str(REPO))
    from benchmarks.gpu_session import FIELDS, summary

    blank = dict.fromkeys(FIELDS, "")
    rows = [
        {**blank, "step": "bandwidth", "backend": "triton", "direction": "forward", "dtype": "fp32",
         "N": 8, "D": 4, "note": "error: RuntimeError: boom"},
        {**blank, "step": "bandwidth", "backend": "triton", "direction": "fwd+bwd", "dtype": "fp32",
         "N": 8, "D": 4, "median_ms": 1.0, "fraction_of_copy_bw": 0.9},
        {**blank, "step": "peers", "backend": "eager", "direction": "fwd+bwd", "dtype": "fp32",
         "N": 8, "D": 4, "median_ms": 4.0, "method": "device"},
    ]  # fmt: skip
    text = summary(rows, {"device": "test"})
    assert "90% (met)" in text and "4.00x eager (target >= 3.0x: met)" in text
