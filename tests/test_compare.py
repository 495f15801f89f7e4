"""``compare_runs`` on planted runs, in-process: every table cell and verdict known in advance,
each threshold tried just inside and just beyond its edge, asymmetric base and new runs (a
swapped pair would give a different answer), and sweeps read as the gate reads them.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from tests.helpers import planted_run, rows_for
from vaebench.compare import compare_runs, load_rows, parse_fraction
from vaebench.errors import VaebenchError
from vaebench.seeds import difference

LABEL = "vae:mlp/normal"


def compare(tmp_path, base: list[dict], new: list[dict], **options):
    options = {"max_slowdown": 0.1, "max_nll_increase": 0.5, **options}
    tmp_path.mkdir(parents=True, exist_ok=True)
    return compare_runs(
        planted_run(tmp_path, "base", base), planted_run(tmp_path, "new", new), **options
    )


def one(nll: float, speed: float = 1000.0, **extra) -> list[dict]:
    rows = rows_for({"mlp": [nll]}, speed=[speed])
    rows[0].update(extra)
    return rows


def test_parse_fraction():
    assert parse_fraction("10%") == pytest.approx(0.1)
    assert parse_fraction("0.25") == 0.25
    assert parse_fraction("0") == 0.0 and parse_fraction("0%") == 0.0
    assert parse_fraction("99.5%") == pytest.approx(0.995)
    for text in ("1", "100%", "-5%", "1.5"):
        with pytest.raises(VaebenchError) as caught:
            parse_fraction(text)
        assert str(caught.value) == f"--max-slowdown must be between 0% and 100%, got '{text}'"
    for text in ("fast", "%", "10 %x"):
        with pytest.raises(VaebenchError) as caught:
            parse_fraction(text)
        assert str(caught.value) == (
            f"--max-slowdown expects a percentage like 10% or a fraction like 0.1, got '{text}'"
        )


def test_one_seed_table_cells_and_verdict(tmp_path):
    result = compare(tmp_path, one(90.0, 1000.0), one(90.75, 850.0))
    assert result.regressions == [f"{LABEL}: IW-NLL +0.750 nats; train samples/s -15.0%"]
    assert result.notes == ["one seed on a side: no error bars, thresholds alone"]
    assert (result.only_in_base, result.only_in_new) == ([], [])
    record = result.table.iloc[0].to_dict()
    assert record["model"] == LABEL
    assert record["seeds base/new"] == "1/1"
    assert record["finished base -> new"] == "1/1 -> 1/1"
    assert (record["NLL"], record["base"], record["new"]) == ("IW-NLL", "90.00", "90.75")
    assert record["delta [95% CI]"] == "+0.750" and record["p"] == "–"
    assert record["train samples/s change"] == "-15.0%"
    assert "train samples/s p" not in record  # no error bars, no p
    assert record["encode samples/s change"] == "–"  # not measured on either side
    assert record["verdict"] == "IW-NLL +0.750 nats; train samples/s -15.0%"


def test_thresholds_at_their_edges(tmp_path):
    inside = compare(tmp_path / "a", one(90.0, 1000.0), one(90.5, 900.0))
    assert inside.regressions == [] and inside.table["verdict"].tolist() == ["ok"]
    beyond = compare(tmp_path / "b", one(90.0, 1000.0), one(90.5001, 899.0))
    assert beyond.table["verdict"].tolist() == ["IW-NLL +0.500 nats; train samples/s -10.1%"]
    better = compare(tmp_path / "c", one(91.0, 1000.0), one(80.0, 2000.0))  # improvements
    assert better.regressions == [] and better.table["train samples/s change"][0] == "+100.0%"
    swapped = compare(tmp_path / "d", one(80.0, 2000.0), one(91.0, 1000.0))
    assert swapped.regressions == [f"{LABEL}: IW-NLL +11.000 nats; train samples/s -50.0%"]


def test_neg_elbo_is_compared_where_iw_nll_is_missing(tmp_path):
    base = one(math.nan, neg_elbo=95.0)
    new = one(math.nan, neg_elbo=96.0)
    result = compare(tmp_path, base, new)
    record = result.table.iloc[0]
    assert (record["NLL"], record["base"], record["new"]) == ("-ELBO", "95.00", "96.00")
    assert result.regressions == [f"{LABEL}: -ELBO +1.000 nats"]


def test_a_model_that_stops_finishing_regresses(tmp_path):
    new = one(90.0)
    new[0]["status"] = "diverged at step 7"
    result = compare(tmp_path, one(90.0), new)
    assert result.regressions == [f"{LABEL}: now diverged at step 7"]
    assert result.table["finished base -> new"][0] == "1/1 -> 0/1"
    base = one(90.0)
    base[0]["status"] = "diverged at step 2"  # already failing in the base: no news
    again = compare(tmp_path / "again", base, new)
    assert again.regressions == []


def seeded(nlls: list[float], speeds: list[float]) -> list[dict]:
    return rows_for({"mlp": nlls}, speed=speeds)


def test_with_seeds_only_significant_changes_count(tmp_path):
    base = seeded([90.0, 90.4, 89.6, 90.2], [1000, 1010, 990, 1005])
    noisy = seeded([92.0, 89.0, 93.0, 89.4], [700, 1100, 600, 1000])  # beyond both, but noise
    result = compare(tmp_path / "noise", base, noisy)
    assert result.regressions == [] and result.notes == []
    record = result.table.iloc[0]
    assert record["seeds base/new"] == "4/4"
    assert (record["base"], record["new"]) == ("90.05", "90.85")  # the means of the seeds
    assert record["delta [95% CI]"] == "+0.800 [-2.258, +3.858]"
    assert record["train samples/s change"] == "-15.1%"
    assert float(record["p"]) > 0.05 and float(record["train samples/s p"]) > 0.05
    real = seeded([92.0, 92.4, 91.6, 92.2], [700, 710, 690, 705])
    regressed = compare(tmp_path / "real", base, real)
    assert regressed.regressions == [f"{LABEL}: IW-NLL +2.000 nats; train samples/s -30.0%"]
    assert float(regressed.table["p"][0]) < 0.05
    tight = seeded([92.0, 92.001, 91.999, 92.0005], [700, 700.1, 699.9, 700.05])
    steady = seeded([90.0, 90.001, 89.999, 90.0005], [1000, 1000.1, 999.9, 1000.05])
    certain = compare(tmp_path / "tight", steady, tight).table.iloc[0]
    assert "e-" in certain["p"] and "e-" in certain["train samples/s p"]  # 1.2e-05, not 1.2E-05


def test_one_failing_seed_among_several_is_named(tmp_path):
    base = seeded([90.0, 90.1], [1000, 1000])
    new = seeded([90.0, 90.1], [1000, 1000])
    new[1]["status"] = "diverged at step 9"
    result = compare(tmp_path, base, new)
    assert result.regressions == [f"{LABEL}: now diverged at step 9"]
    assert result.table["finished base -> new"][0] == "2/2 -> 1/2"


def test_a_run_without_nlls_is_labelled_iw_nll(tmp_path):
    base, new = one(math.nan), one(math.nan)
    record = compare(tmp_path, base, new).table.iloc[0]
    assert (record["NLL"], record["base"], record["delta [95% CI]"]) == ("IW-NLL", "–", "–")


def test_one_thin_model_is_enough_for_the_note(tmp_path):
    base = rows_for({"conv": [80.0], "mlp": [90.0, 90.2]})
    new = rows_for({"conv": [80.0], "mlp": [90.0, 90.2]})
    assert compare(tmp_path, base, new).notes == [
        "one seed on a side: no error bars, thresholds alone"
    ]


def test_slowdown_edges(tmp_path):
    exact = compare(tmp_path / "exact", one(90.0, 1024.0), one(90.0, 768.0), max_slowdown=0.25)
    assert exact.regressions == []  # -25.0% is not beyond a 25% budget
    slow = compare(tmp_path / "slow", one(90.0, 0.5), one(90.0, 0.25))
    assert slow.table["train samples/s change"][0] == "-50.0%" and slow.regressions
    zero = compare(tmp_path / "zero", one(90.0, 0.0), one(90.0, 10.0))
    assert zero.table["train samples/s change"][0] == "–" and zero.regressions == []


def test_alpha_decides_between_noise_and_regression(tmp_path):
    base = seeded([90.0, 90.4, 89.6, 90.2], [1000] * 4)
    new = seeded([90.9, 91.5, 90.3, 91.1], [1000] * 4)
    p = difference([r["iw_nll"] for r in base], [r["iw_nll"] for r in new]).p
    assert 0.01 < p < 0.05
    assert compare(tmp_path / "p", base, new).table["p"][0] == f"{p:.3g}"
    assert compare(tmp_path / "default", base, new).regressions  # alpha 0.05 by default
    assert not compare(tmp_path / "strict", base, new, alpha=p).regressions  # p < alpha only
    assert compare(tmp_path / "loose", base, new, alpha=p * 1.0001).regressions


def test_models_on_one_side_only(tmp_path):
    base = rows_for({"mlp": [90.0], "conv": [85.0]})
    new = rows_for({"mlp": [90.0], "resnet": [80.0]})
    result = compare(tmp_path, base, new)
    assert result.only_in_base == ["vae:conv/normal"] and result.only_in_new == [
        "vae:resnet/normal"
    ]
    assert result.table["model"].tolist() == [LABEL]
    with pytest.raises(VaebenchError) as caught:
        compare(tmp_path / "none", rows_for({"conv": [1.0]}), rows_for({"mlp": [1.0]}))
    assert str(caught.value) == (
        f"{tmp_path / 'none' / 'base'} and {tmp_path / 'none' / 'new'} have no model "
        "(model:plugin/prior) in common; nothing to compare"
    )


@pytest.mark.parametrize("key, a, b", [("dataset", "digits", "mnist"), ("iw_samples", 100, 5000)])
def test_nlls_of_different_data_or_k_are_not_compared(tmp_path, key, a, b):
    base, new = one(90.0, **{key: a}), one(90.0, **{key: b})
    with pytest.raises(VaebenchError) as caught:
        compare(tmp_path, base, new)
    first, second = sorted([str(a), str(b)])
    assert str(caught.value) == (
        f"{LABEL}: {key} differs ({first} vs {second}); NLLs are not comparable"
    )


def test_a_setting_missing_on_one_side_is_no_mismatch(tmp_path):
    new = one(90.0)
    new[0]["likelihood"] = None
    assert compare(tmp_path, one(90.0), new).regressions == []


def write_sweep(folder, rows: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"axes": {}}))
    pd.DataFrame(rows).to_csv(folder / "sweep.csv", index=False)


def test_sweep_rows_carry_their_axes_in_the_model_name(tmp_path):
    rows = [
        {
            **row,
            "axis.latent_dim": dim,
            "axis.beta": 0.5,
            "axis.seed": row["seed"],
            "axis.plugins": "mlp",
        }
        for dim in (8, 16)
        for row in rows_for({"mlp": [90.0 + dim, 91.0 + dim]})
    ]
    write_sweep(tmp_path / "sweep", rows)
    loaded = load_rows(tmp_path / "sweep")
    names = ["vae [latent_dim=8 beta=0.5]"] * 2 + ["vae [latent_dim=16 beta=0.5]"] * 2
    assert [r["model"] for r in loaded] == names
    assert all((r["precision"], r["compile"]) == ("fp32", "none") for r in loaded)
    assert loaded[0]["iw_nll"] == 98.0


def test_a_folder_with_only_one_sweep_file_is_read_as_a_run(tmp_path):
    run = planted_run(tmp_path, "run", rows_for({"mlp": [90.0]}))
    pd.DataFrame([{"model": "other"}]).to_csv(run / "sweep.csv", index=False)
    assert [r["model"] for r in load_rows(run)] == ["vae"]
    assert load_rows(run)[0]["iw_nll"] == 90.0


def test_an_unreadable_sweep_csv_is_named(tmp_path):
    folder = tmp_path / "sweep"
    write_sweep(folder, rows_for({"mlp": [90.0]}))
    (folder / "sweep.csv").write_text("")
    with pytest.raises(VaebenchError) as caught:
        load_rows(folder)
    assert str(caught.value).startswith(f"{folder / 'sweep.csv'}: unreadable (")
