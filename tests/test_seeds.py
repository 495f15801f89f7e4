"""Seeds and significance: ``--seeds`` rows, mean ± std tables, and a compare gate that fires
for a real regression but not for noise of the size of the seed-to-seed spread.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from tests.helpers import FAST_CLI, REPO, planted_run, rows_for
from vaebench.cli import main
from vaebench.config import RunConfig, from_text
from vaebench.schema import COLUMNS, MISSING
from vaebench.seeds import difference, mean_std, several_seeds, summary_rows


def welch_by_hand(base: list[float], new: list[float]) -> tuple[float, float, float]:
    """Welch's t-test from its textbook formulas: p and the 95% interval of the difference."""
    a, b = np.asarray(base), np.asarray(new)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    delta = b.mean() - a.mean()
    p = 2 * stats.t.sf(abs(delta / se), df)
    half = stats.t.ppf(0.975, df) * se
    return p, delta - half, delta + half


@pytest.mark.parametrize("shift, spread", [(0.4, 0.3), (2.0, 1.0), (0.0, 0.5)])
def test_difference_is_welchs_test(shift, spread):
    rng = np.random.default_rng(1)
    base = list(rng.normal(100, 0.3, 5))
    new = list(rng.normal(100 + shift, spread, 4))  # unequal sizes and variances
    diff = difference(base, new)
    p, low, high = welch_by_hand(base, new)
    assert diff.delta == pytest.approx(np.mean(new) - np.mean(base))
    assert (diff.p, diff.low, diff.high) == pytest.approx((p, low, high), rel=1e-9)
    assert diff.has_error_bars


def test_difference_without_error_bars_or_without_spread():
    one = difference([1.0], [2.0, 3.0])
    assert not one.has_error_bars and math.isnan(one.p) and one.delta == 1.5
    assert difference([1.0, 1.0], [2.0, 2.0]).p == 0.0  # no spread, different: certain
    assert difference([1.0, 1.0], [1.0, 1.0]).p == 1.0


def test_one_sided_and_empty_differences_have_unbounded_or_no_figures():
    for base, new in (([], [1.0]), ([1.0], []), ([], [])):
        nothing = difference(base, new)
        assert all(math.isnan(v) for v in (nothing.delta, nothing.low, nothing.high, nothing.p))
        assert (nothing.n_base, nothing.n_new) == (len(base), len(new))
    for base, new in (([1.0], [2.0, 4.0, 6.0]), ([2.0, 4.0, 6.0], [1.0])):
        one = difference(base, new)  # one value on a side: a delta but no error bar
        assert (one.low, one.high) == (-math.inf, math.inf) and math.isnan(one.p)
        assert (one.n_base, one.n_new) == (len(base), len(new))
    flat = difference([1.0, 1.0], [3.0, 3.0, 3.0])
    assert (flat.delta, flat.low, flat.high, flat.p) == (2.0, 2.0, 2.0, 0.0)
    assert (flat.n_base, flat.n_new) == (2, 3)


@pytest.mark.filterwarnings("ignore:Precision loss")  # scipy, of the flat side
def test_one_flat_side_is_still_welchs_test():
    base, new = [5.0, 5.0, 5.0], [5.5, 6.0, 7.5, 6.5]  # only one side has spread
    diff = difference(base, new)
    assert (diff.p, diff.low, diff.high) == pytest.approx(welch_by_hand(base, new), rel=1e-9)
    assert 0 < diff.p < 1


IW_NLL = next(c for c in COLUMNS if c.key == "iw_nll")


def test_mean_std_text():
    assert mean_std(IW_NLL, []) == MISSING
    assert mean_std(IW_NLL, [3.14159]) == "3.14"
    assert mean_std(IW_NLL, [1.0, 2.0, 6.0]) == "3.00 ± 2.65 (n=3)"  # sample std: sqrt(7)


def modal(rows: list[dict]) -> list[dict]:
    return [{**row, "precision": "fp32", "compile": "none"} for row in rows]


def test_summary_rows_by_hand():
    rows = modal(rows_for({"mlp": [10.0, 14.0], "conv": [7.0]}))
    rows[0]["iw_samples"] = 50  # a setting is read from the model's first row
    rows[1]["status"] = "diverged at step 3"
    mlp, conv = summary_rows(rows)
    assert mlp["plugin"] == "mlp" and mlp["iw_samples"] == 50
    assert mlp["status"] == "ok 1/2" and mlp["seed"] == "0,1"
    assert mlp["iw_nll"] == "10.00"  # the diverged seed is left out of the figures
    assert conv["status"] == "ok 1/1" and conv["seed"] == "0" and conv["iw_nll"] == "7.00"
    metrics = {"iw_nll", "train_samples_per_s"}  # the rows' metrics, and no other column
    assert set(mlp) - metrics == {
        "model",
        "plugin",
        "prior",
        "precision",
        "compile",
        "seed",
        "status",
        "dataset",
        "likelihood",
        "iw_samples",
    }
    assert metrics <= set(mlp)


def test_several_seeds_means_two_seeds_of_one_model():
    assert not several_seeds(modal(rows_for({"mlp": [1.0], "conv": [2.0]})))
    assert several_seeds(modal(rows_for({"mlp": [1.0], "conv": [2.0, 3.0]})))


def test_the_gate_fires_for_a_real_regression_and_not_for_seed_noise(tmp_path, capsys):
    rng = np.random.default_rng(0)
    base_nll = list(100 + rng.normal(0, 0.3, 5))
    base = planted_run(tmp_path, "base", rows_for({"mlp": base_nll}))
    # +1.5 nats with the base's own spread: beyond the 1-nat threshold and far beyond noise
    worse = planted_run(tmp_path, "worse", rows_for({"mlp": [v + 1.5 for v in base_nll]}))
    assert main(["compare", str(base), str(worse)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION vae:mlp/normal: IW-NLL +1.500 nats" in out
    # +1.2 nats on average, but seeds that scatter by 3 nats: not distinguishable from noise
    noisy_nll = [v + 1.2 + d for v, d in zip(base_nll, [-3, 3, -2.5, 2.5, 0.6], strict=True)]
    noisy = planted_run(tmp_path, "noisy", rows_for({"mlp": noisy_nll}))
    assert main(["compare", str(base), str(noisy)]) == 0
    out = capsys.readouterr().out
    assert "no regression" in out and "[" in out  # the interval is shown
    # ... unless the user accepts a 50% false-alarm rate
    assert main(["compare", str(base), str(noisy), "--alpha", "0.5"]) == 1


def test_with_one_seed_the_thresholds_decide_and_the_table_says_so(tmp_path, capsys):
    base = planted_run(tmp_path, "base", rows_for({"mlp": [100.0]}))
    worse = planted_run(tmp_path, "worse", rows_for({"mlp": [101.5]}))
    assert main(["compare", str(base), str(worse)]) == 1
    out = capsys.readouterr().out
    assert "no error bars" in out and "REGRESSION" in out


def test_a_slowdown_counts_only_when_it_is_significant(tmp_path, capsys):
    nll = [100.0, 100.1, 99.9, 100.05]
    steady = [1000.0, 1010.0, 990.0, 1005.0]
    base = planted_run(tmp_path, "base", rows_for({"mlp": nll}, speed=steady))
    slower = planted_run(
        tmp_path, "slower", rows_for({"mlp": nll}, speed=[0.8 * s for s in steady])
    )
    assert main(["compare", str(base), str(slower)]) == 1
    jittery = planted_run(
        tmp_path, "jittery", rows_for({"mlp": nll}, speed=[400.0, 1500.0, 500.0, 800.0])
    )
    assert main(["compare", str(base), str(jittery)]) == 0  # -20% on average, p large


def test_seeds_are_parsed_checked_and_deduplicated():
    assert from_text("seeds", "0,1,1,2") == [0, 1, 2]
    for bad in ("-1", "a", "", "1.5"):
        with pytest.raises(ValueError):
            from_text("seeds", bad)
    assert RunConfig.from_mapping({"seeds": [3, 4]}, "sweep").seeds == [3, 4]


def test_run_with_seeds_writes_a_row_per_seed_and_prints_mean_and_std(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *FAST_CLI, "--seeds", "0,1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in rows] == [0, 1]
    assert rows[0]["iw_nll"] != rows[1]["iw_nll"]  # each seed trained its own model
    history = json.loads((out / "history.json").read_text())
    assert set(history) == {"vae:mlp/normal seed 0", "vae:mlp/normal seed 1"}
    assert len({r["checkpoint"] for r in rows}) == 2
    summary = summary_rows(rows)
    assert len(summary) == 1 and summary[0]["status"] == "ok 2/2"
    assert "(n=2)" in summary[0]["iw_nll"] and "(n=2)" in printed
    assert summary[0]["dataset"] == "synthetic" and "train_spread" not in summary[0]
    assert "IQR" not in printed  # one seed's spread must not stand beside the mean of all
    assert main(["compare", str(out), str(out)]) == 0


def test_compare_reads_a_sweeps_seeds(capsys):
    sweep = REPO / "examples" / "sweep-digits"  # 2 plugins x 2 priors x 3 seeds, committed
    assert main(["compare", str(sweep), str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "3/3" in out and "no error bars" not in out and "no regression" in out
