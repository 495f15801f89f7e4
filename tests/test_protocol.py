"""The benchmark protocol: three splits, early stopping on validation with the best weights
restored, binarization, image layout, and versioned tasks read from files in their published
formats (written here byte for byte as published).

Each test names the planted bug it catches.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from torch import nn

from tests.helpers import write_idx
from vaebench import runner
from vaebench.cli import main
from vaebench.config import DATA_ENV, RunConfig
from vaebench.data import Dataset, binarized, load_path, sample_binary, with_validation
from vaebench.errors import ConfigError, DataError
from vaebench.registry import Owner
from vaebench.resolve import resolve_config
from vaebench.runner import load_dataset
from vaebench.step import StepSettings
from vaebench.tasks import Task, task_from_file
from vaebench.train import train

# --- early stopping on a planted validation curve -------------------------------------------


class Planted:
    """Training loss moves the weights every step; validation returns a planted curve and
    snapshots the weights it judged, so the restored weights can be identified."""

    variational = False

    def __init__(self, curve):
        self.curve = list(curve)
        self.judged: list[torch.Tensor] = []

    def loss(self, model, x, step):
        if model.training:
            out = (model(x) - 1).pow(2).sum(1)
            return out.mean(), {"recon": out}
        self.judged.append(model.weight.detach().clone())
        return torch.tensor(self.curve[len(self.judged) - 1]), {}


def planted_run(curve, *, epochs, patience):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    objective = Planted(curve)
    x = torch.randn(16, 3)
    outcome = train(
        model,
        x,
        objective=objective,
        epochs=epochs,
        batch_size=4,
        settings=StepSettings(lr=0.05),
        seed=0,
        x_valid=torch.randn(5, 3),
        patience=patience,
    )
    return model, objective, outcome


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch():
    # Best at epoch 4; three epochs without improvement end training after epoch 7.
    curve = [5.0, 3.0, 4.0, 2.5, 2.6, 2.7, 2.8, 2.9]
    model, objective, outcome = planted_run(curve, epochs=8, patience=3)
    assert outcome.best_epoch == 4
    assert outcome.epochs_run == 7 and outcome.stopped_early  # an off-by-one patience fails
    assert [e["valid_loss"] for e in outcome.history] == pytest.approx(curve[:7])
    # Keeping the last weights (or the first) instead of the best epoch's fails here.
    assert torch.equal(model.weight, objective.judged[3])
    assert not torch.equal(objective.judged[3], objective.judged[6])


def test_without_patience_every_epoch_runs_and_the_best_weights_are_still_kept():
    curve = [4.0, 1.0, 3.0, 2.0, 5.0]
    model, objective, outcome = planted_run(curve, epochs=5, patience=0)
    assert outcome.epochs_run == 5 and not outcome.stopped_early and outcome.best_epoch == 2
    assert torch.equal(model.weight, objective.judged[1])


def test_a_nan_validation_figure_is_never_the_best_and_the_last_epoch_is_not_an_early_stop():
    model, objective, outcome = planted_run([float("nan"), 2.0, 3.0], epochs=3, patience=1)
    assert outcome.best_epoch == 2 and outcome.epochs_run == 3 and not outcome.stopped_early
    assert torch.equal(model.weight, objective.judged[1])


def test_training_reads_the_validation_split_and_never_the_test_split(
    registry, tmp_path, monkeypatch
):
    seen = {}
    real_train = runner.train

    def spy(model, x_train, **kwargs):
        seen.update(x_train=x_train, **kwargs)
        return real_train(model, x_train, **kwargs)

    options = {"n_train": 40, "n_valid": 12, "n_test": 20}
    config = resolve_config(
        RunConfig(
            dataset="synthetic",
            dataset_options=options,
            epochs=3,
            patience=1,
            iw_samples=2,
            timing_min_time=0.01,
            out=str(tmp_path / "run"),
        ),
        registry,
    )
    monkeypatch.setattr(runner, "train", spy)
    (row,) = runner.run(config, registry)
    data = registry.get("dataset", "synthetic").factory(seed=0, **options)
    assert torch.equal(seen["x_valid"], data.x_valid)  # the test split here fails
    assert torch.equal(seen["x_train"], data.x_train)
    assert (row["n_train"], row["n_valid"], row["n_test"]) == (40, 12, 20)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    epochs = history["vae:mlp/normal"]
    assert row["best_epoch"] == min(epochs, key=lambda e: e["valid_neg_elbo"])["epoch"]
    assert row["valid_neg_elbo"] == pytest.approx(epochs[row["best_epoch"] - 1]["valid_neg_elbo"])
    assert row["epochs_run"] == len(epochs)


# --- validation hold-outs -------------------------------------------------------------------


def numbered(n: int) -> Dataset:
    """Example i holds the value i: where each example went is readable from its value."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1).repeat(1, 4)
    return Dataset("numbered", x, x[:5].clone(), y_train=torch.arange(n), y_test=torch.arange(5))


def test_a_fraction_holds_out_a_fixed_shuffle_and_labels_follow_their_images():
    a, b = with_validation(numbered(100), 0.1), with_validation(numbered(100), 0.1)
    assert a.sizes() == {"n_train": 90, "n_valid": 10, "n_test": 5}
    assert torch.equal(a.x_valid, b.x_valid)  # deterministic
    ids = torch.cat([a.x_train[:, 0], a.x_valid[:, 0]]).long()
    assert sorted(ids.tolist()) == list(range(100))  # nothing lost, nothing duplicated
    assert a.x_valid[:, 0].long().tolist() != list(range(90, 100))  # shuffled, not the tail
    assert torch.equal(a.y_valid, a.x_valid[:, 0].long())


def test_a_count_from_the_end_takes_the_last_examples_in_file_order():
    d = with_validation(numbered(30), 0.0, count=10, last=True)
    assert d.x_valid[:, 0].tolist() == list(range(20, 30))
    assert d.x_train[:, 0].tolist() == list(range(20))


def test_an_existing_validation_split_is_kept_and_an_impossible_one_refused():
    d = with_validation(numbered(30), 0.0, count=10, last=True)
    assert with_validation(d, 0.5) is d
    with pytest.raises(DataError, match="cannot hold out 29 validation examples from 30"):
        with_validation(numbered(30), 0.0, count=29)


# --- binarization ---------------------------------------------------------------------------


def grey(value: float = 0.3) -> Dataset:
    x = torch.full((200, 20), value)
    return Dataset("grey", x, x[:100].clone(), x_valid=x[:50].clone())


def test_static_binarization_samples_every_split_once_with_a_fixed_seed():
    a, b = binarized(grey(), "static"), binarized(grey(), "static")
    for split in ("x_train", "x_valid", "x_test"):
        x = getattr(a, split)
        assert set(x.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(x, getattr(b, split))
    assert abs(a.x_train.mean().item() - 0.3) < 0.03  # Bernoulli(p), not a threshold at 0.5


def test_dynamic_binarization_keeps_training_probabilities_and_fixes_evaluation_splits():
    d = binarized(grey(), "dynamic")
    assert torch.equal(d.x_train, grey().x_train)
    assert set(d.x_test.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(d.x_test, binarized(grey(), "dynamic").x_test)
    plain = grey()
    assert binarized(plain, "none") is plain


def test_binarization_refuses_data_outside_the_unit_interval():
    with pytest.raises(DataError, match="needs data in \\[0, 1\\]"):
        binarized(grey(1.5), "static")


def test_dynamic_binarization_draws_a_fresh_sample_of_every_batch():
    batches = []

    class Record:
        variational = False

        def loss(self, model, x, step):
            batches.append(x.clone())
            out = model(x).sum(1)
            return out.mean(), {"recon": out}

    x = torch.full((64, 50), 0.5)
    train(
        nn.Linear(50, 1),
        x,
        objective=Record(),
        epochs=3,
        batch_size=64,
        settings=StepSettings(lr=0.01),
        seed=0,
        batch_transform=sample_binary,
    )
    assert len(batches) == 3
    for batch in batches:
        assert set(batch.unique().tolist()) == {0.0, 1.0}
        assert 0.4 < batch.mean().item() < 0.6
    assert not torch.equal(batches[0], batches[1])  # sampled once and reused fails


# --- .npz: validation arrays and channels-last layout ---------------------------------------


def test_npz_validation_arrays_and_channels_last_images(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, size=(10, 6, 5, 3), dtype=np.uint8)  # H != W: a swap shows
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=nhwc, x_valid=nhwc[:3], x_test=nhwc[:4])
    data = load_path(str(path))
    assert data.layout == "nhwc" and data.input_shape == (3, 6, 5)
    expected = torch.from_numpy(nhwc.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert torch.equal(data.x_train, expected)
    assert data.sizes() == {"n_train": 10, "n_valid": 3, "n_test": 4}
    kept = load_path(str(path), {"layout": "nchw"})  # the user decides
    assert kept.layout == "nchw" and kept.input_shape == (6, 5, 3)
    with pytest.raises(DataError, match="accepts only layout"):
        load_path(str(path), {"n_train": 3})


# --- tasks: files in their published formats ------------------------------------------------


def write_cifar_batches(folder, per_batch: int, test: int) -> np.ndarray:
    """CIFAR-10 binary records: a label byte, then the R, G and B planes row by row."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = test if name == "test_batch" else per_batch
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n, 1), dtype=np.uint8)
        records = np.concatenate([labels, images.reshape(n, -1)], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())
        train.append(images)
    return np.concatenate(train[:5])


def test_static_mnist_task_runs_end_to_end_and_records_its_protocol(static_mnist_root, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--task", "static-mnist", "--data-root", str(static_mnist_root)]
    args += ["--epochs", "2", "--iw-samples", "4", "--latent-dim", "4", "--batch-size", "20"]
    assert main([*args, "--timing-min-time", "0.01", "--out", str(out), "-q"]) == 0
    (row,) = json.loads((out / "results.json").read_text())
    # latent_dim and batch_size are suggestions; epochs and K are the protocol's.
    assert row["protocol"] == "static-mnist@1 (modified: epochs, iw_samples)"
    assert (row["n_train"], row["n_valid"], row["n_test"]) == (60, 20, 30)
    assert (row["likelihood"], row["binarize"], row["patience"]) == ("bernoulli", "none", 50)
    assert row["status"] == "ok" and row["iw_nll"] > 0
    files = json.loads((out / "environment.json").read_text())["data_files"]
    assert len(files) == 3
    for path, digest in files.items():
        assert digest == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert json.loads((out / "task.json").read_text())["name"] == "static-mnist"
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
    markdown = (tmp_path / "r.md").read_text()
    assert "Literature: static-mnist@1" in markdown and "88.71" in markdown


def test_an_unchanged_protocol_reads_plainly_and_a_suggestion_is_not_a_change(registry, tmp_path):
    given = RunConfig.from_mapping({"task": "static-mnist", "latent_dim": 3}, "cell")
    config = resolve_config(
        RunConfig.from_mapping(
            {"task": "static-mnist", "latent_dim": 3, "data_root": str(tmp_path)}, "cell"
        ),
        registry,
    )
    assert config.protocol == "static-mnist@1"
    assert (config.latent_dim, config.iw_samples, config.dataset) == (3, 5000, "static-mnist")
    changed = resolve_config(
        RunConfig.from_mapping(
            {"task": "static-mnist", "binarize": "dynamic", "data_root": str(tmp_path)}, "cell"
        ),
        registry,
    )
    assert changed.protocol == "static-mnist@1 (modified: binarize)"
    assert given.given == ["latent_dim", "task"]


@pytest.mark.parametrize("task, folder", [("dynamic-mnist", "mnist"), ("fashion-mnist", ".")])
def test_idx_tasks_hold_out_the_last_10000_training_images(registry, tmp_path, task, folder):
    folder = tmp_path / folder  # the task's folder under the root, or the root itself
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (10_012, 28, 28), dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte", x_train)
    write_idx(folder / "train-labels-idx1-ubyte", rng.integers(0, 10, 10_012))
    write_idx(folder / "t10k-images-idx3-ubyte", x_train[:7])
    write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 7))
    config = resolve_config(RunConfig(task=task, data_root=str(tmp_path)), registry)
    data = load_dataset(config, registry)
    assert data.sizes() == {"n_train": 12, "n_valid": 10_000, "n_test": 7}
    assert data.name == task and len(data.files) == 4
    assert torch.equal(data.x_train[:, 0], torch.from_numpy(x_train[:12] / 255).float())
    assert set(data.x_valid.unique().tolist()) == {0.0, 1.0}  # binarized once ...
    assert len(data.x_train.unique()) > 2  # ... training left to each batch's fresh sample


def test_the_omniglot_task_reads_chardata_mat(registry, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (1_350, 28, 28))
    columns = np.stack([image.ravel(order="F") for image in images], axis=1)  # MATLAB x(:)
    (tmp_path / "omniglot").mkdir()
    scipy.io.savemat(
        tmp_path / "omniglot" / "chardata.mat", {"data": columns, "testdata": columns[:, :4]}
    )
    config = resolve_config(RunConfig(task="omniglot", data_root=str(tmp_path)), registry)
    data = load_dataset(config, registry)
    assert data.sizes() == {"n_train": 5, "n_valid": 1_345, "n_test": 4}
    assert torch.allclose(data.x_train[:, 0].double(), torch.from_numpy(images[:5]), atol=1e-6)


def test_the_cifar10_task_reads_its_batches_and_holds_out_the_last_5000(registry, tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    train_images = write_cifar_batches(folder, per_batch=1_001, test=6)
    assert train_images.shape[0] == 5_005
    test_records = np.frombuffer((folder / "test_batch.bin").read_bytes(), np.uint8)
    test_records = test_records.reshape(6, 1 + 3 * 32 * 32)
    config = resolve_config(RunConfig(task="cifar10", data_root=str(tmp_path)), registry)
    assert (config.likelihood, config.plugins) == ("dlogistic", ["conv"])
    data = load_dataset(config, registry)
    assert data.sizes() == {"n_train": 5, "n_valid": 5_000, "n_test": 6}
    assert data.name == "cifar10" and len(data.files) == 6
    # Channels first, R, G, B planes row by row, scaled by 255; the hold-out is the last
    # 5000 training images in file order, and labels follow their images.
    scaled = torch.from_numpy(train_images / 255).float()
    assert data.x_train.shape == (5, 3, 32, 32)
    assert torch.equal(data.x_train, scaled[:5]) and torch.equal(data.x_valid, scaled[5:])
    test_images = test_records[:, 1:].reshape(6, 3, 32, 32)
    assert torch.equal(data.x_test, torch.from_numpy(test_images / 255).float())
    assert data.y_test.tolist() == test_records[:, 0].tolist()


@pytest.mark.slow
def test_the_cifar10_task_trains_a_conv_vae_under_the_logistic_mixture(tmp_path):
    write_cifar_batches(tmp_path / "cifar-10-batches-bin", per_batch=1_001, test=6)
    out = tmp_path / "run"
    args = ["run", "--task", "cifar10", "--data-root", str(tmp_path), "--epochs", "1"]
    args += ["--iw-samples", "2", "--latent-dim", "4", "-L", "mixtures=2"]
    assert main([*args, "--timing-min-time", "0.01", "--out", str(out), "-q"]) == 0
    (row,) = json.loads((out / "results.json").read_text())
    assert (row["n_train"], row["n_valid"], row["n_test"]) == (5, 5_000, 6)
    assert (row["likelihood"], row["plugin"], row["status"]) == ("dlogistic", "conv", "ok")
    assert row["protocol"] == "cifar10@1 (modified: epochs, iw_samples, likelihood_options)"
    assert row["bpd"] == pytest.approx(row["iw_nll"] / (3072 * np.log(2)))
    assert 0 < row["bpd"] < 9  # 8-bit data: a uniform model is 8 bits/dim


# --- task errors: one line, exit 2 ----------------------------------------------------------


@pytest.mark.parametrize(
    "extra, needle",
    [
        ([], "expected binarized_mnist_train.amat, binarized_mnist_valid.amat"),
        (["--dataset", "digits"], "--task static-mnist fixes its data and splits; drop --dataset"),
        (["--valid-fraction", "0.2"], "drop --valid-fraction"),
    ],
)
def test_task_mistakes_exit_2_with_one_line(tmp_path, capsys, extra, needle):
    args = ["run", "--task", "static-mnist", "--data-root", str(tmp_path), *extra]
    assert main([*args, "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_missing_files_say_how_to_fetch_them_or_where_they_are_published(tmp_path, capsys):
    assert main(["run", "--task", "cifar10", "--data-root", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "data_batch_1.bin" in err and "run `vaebench data fetch cifar10`" in err
    assert main(["run", "--task", "omniglot", "--data-root", str(tmp_path), "-q"]) == 2
    assert "github.com/yburda/iwae" in capsys.readouterr().err  # no pinned source: by hand


def test_the_data_root_comes_from_the_environment_else_the_user_cache(
    static_mnist_root, registry, monkeypatch, tmp_path
):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = resolve_config(RunConfig(task="static-mnist"), registry)
    assert config.data_root == str(tmp_path / "cache" / "vaebench" / "data")  # data fetch's
    monkeypatch.setenv(DATA_ENV, str(static_mnist_root))
    config = resolve_config(RunConfig(task="static-mnist"), registry)
    assert load_dataset(config, registry).sizes()["n_valid"] == 20


def test_unknown_tasks_and_broken_task_files_are_named(registry, tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'mnist'; available: cifar10"):
        resolve_config(RunConfig(task="mnist", data_root=str(tmp_path)), registry)
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nversion = 1\n[data]\nformat = "amat"\nfiles = {}\n')
    bad.write_text(bad.read_text() + "[protocol]\nepochs = -1\n")
    with pytest.raises(ConfigError, match=re.escape("bad.toml [protocol]: epochs: must be >= 1")):
        task_from_file(bad)
    bad.write_text('name = "x"\n')
    with pytest.raises(ConfigError, match=re.escape("bad.toml: missing 'version'")):
        task_from_file(bad)
    bad.write_text("name = ")
    with pytest.raises(ConfigError, match=re.escape("bad.toml: cannot read the task")):
        task_from_file(bad)


def npz_reader(task, files):
    """A third party's reader: the ``module:function`` a task's format may name."""
    return load_path(str(files["archive"]))


def test_a_plugin_adds_a_task_with_its_own_reader(registry, tmp_path):
    from vaebench import hookimpl

    path = tmp_path / "mine.npz"
    x = np.random.default_rng(0).random((30, 4, 4)).astype(np.float32)
    np.savez(path, x_train=x[:20], x_test=x[20:])

    class Plugin:
        @staticmethod
        @hookimpl
        def vaebench_register_tasks(register):
            register(
                "mine",
                lambda: Task(
                    name="mine",
                    version=3,
                    description="a plugin's task",
                    format="tests.test_protocol:npz_reader",
                    files={"archive": "mine.npz"},
                    published="nowhere",
                    valid_count=5,
                    protocol={"epochs": 7},
                ),
            )

    registry.add_plugin(Plugin(), Owner("mine-dist", "1.0", "mine"))
    config = resolve_config(RunConfig(task="mine", data_root=str(tmp_path)), registry)
    assert (config.epochs, config.protocol) == (7, "mine@3")
    assert load_dataset(config, registry).sizes() == {"n_train": 15, "n_valid": 5, "n_test": 10}


def test_vaebench_tasks_lists_every_task_with_its_version(capsys):
    assert main(["tasks", "--json"]) == 0
    tasks = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert set(tasks) == {"static-mnist", "dynamic-mnist", "fashion-mnist", "omniglot", "cifar10"}
    assert tasks["static-mnist"]["protocol"]["iw_samples"] == 5000
    for task in tasks.values():
        for ref in task["references"]:
            assert ref["source"] and ref["value"] > 0


# --- found by a hostile hunt: each case once crashed, hung or was silently wrong -------------


def test_an_idx_header_whose_size_wraps_int64_is_refused(tmp_path):
    folder = tmp_path / "idx"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**31, 2**31, 4)  # 2**64 bytes
    (folder / "t10k-images-idx3-ubyte").write_bytes(header + b"\0" * 64)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: IDX header announces"):
        load_path(str(folder))


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"x_train": np.zeros((30, 0)), "x_test": np.zeros((5, 0))}, "hold no values"),
        ({"x_train": np.ones((30, 4), np.complex64), "x_test": np.ones((5, 4))}, "real numbers"),
        (
            {
                "x_train": np.ones((30, 4)),
                "x_test": np.ones((5, 4)),
                "y_train": np.full(30, np.inf),
                "y_test": np.zeros(5),
            },
            "labels must be integers",
        ),
    ],
    ids=["zero-width", "complex", "infinite-labels"],
)
def test_arrays_that_cannot_be_images_are_refused(tmp_path, arrays, needle, recwarn):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=needle):
        load_path(str(path))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_every_split_of_integer_data_shares_one_scale(tmp_path):
    path = tmp_path / "scaled.npz"
    train = np.array([[0, 255], [10, 20]], np.uint8)
    test = np.array([[0, 1], [1, 0]], np.uint8)  # peaks at 1: not binary data, 8-bit data
    np.savez(path, x_train=train, x_test=test)
    data = load_path(str(path))
    assert data.x_test.max().item() == pytest.approx(1 / 255)
    wide = tmp_path / "wide.npz"
    np.savez(wide, x_train=np.array([[0, 1000], [1, 2]]), x_test=np.array([[0, 500], [3, 4]]))
    assert load_path(str(wide)).x_test.max().item() == pytest.approx(0.5)


def test_a_single_x_with_x_valid_keeps_the_given_validation_split(tmp_path):
    path = tmp_path / "xv.npz"
    np.savez(path, x=np.random.default_rng(0).random((20, 4)), x_valid=np.zeros((6, 4)))
    assert load_path(str(path)).sizes() == {"n_train": 16, "n_valid": 6, "n_test": 4}


def test_a_layout_value_is_checked_whatever_the_data_format(tmp_path):
    folder = tmp_path / "idx"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(DataError, match="-D layout=garbage: use one of auto, nchw, nhwc"):
        load_path(str(folder), {"layout": "garbage"})


def test_task_names_with_versions_and_changed_likelihood_options(registry, tmp_path):
    config = resolve_config(RunConfig(task="static-mnist@1", data_root=str(tmp_path)), registry)
    assert config.protocol == "static-mnist@1"
    with pytest.raises(ConfigError, match="task static-mnist is at version 1 here, not 2"):
        resolve_config(RunConfig(task="static-mnist@2", data_root=str(tmp_path)), registry)
    changed = resolve_config(
        RunConfig.from_mapping(
            {"task": "cifar10", "likelihood_options": {"bins": 16}, "data_root": str(tmp_path)}, "x"
        ),
        registry,
    )
    assert changed.protocol == "cifar10@1 (modified: likelihood_options)"
    with pytest.raises(ConfigError, match="--data-root names where a --task finds its files"):
        resolve_config(RunConfig(data_root=str(tmp_path), given=["data_root"]), registry)


def test_too_few_training_images_for_the_tasks_hold_out_names_the_task(registry, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((10_001, 28, 28), np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        n = 10_001 if name.startswith("train") else 3
        write_idx(folder / name, np.zeros(n, np.uint8))
    config = resolve_config(RunConfig(task="dynamic-mnist", data_root=str(tmp_path)), registry)
    with pytest.raises(DataError, match="training files hold 10,001 examples, too few") as info:
        load_dataset(config, registry)
    assert "--valid-fraction" not in str(info.value)


def test_cifar_batches_at_the_data_root_are_read_there(registry, tmp_path):
    write_cifar_batches(tmp_path / "top", per_batch=1_001, test=2)
    for path in (tmp_path / "top").iterdir():
        path.rename(tmp_path / path.name)
    (tmp_path / "cifar-10-batches-bin").mkdir(exist_ok=True)  # an unrelated, incomplete copy
    (tmp_path / "top").rmdir()
    config = resolve_config(RunConfig(task="cifar10", data_root=str(tmp_path)), registry)
    assert load_dataset(config, registry).sizes()["n_test"] == 2


@pytest.mark.parametrize(
    "reference, needle",
    [
        ({"source": ["a list"]}, "source must be text"),
        ({"value": float("nan")}, "finite number"),
        ({"samples": "many"}, "whole number >= 1"),
    ],
)
def test_reference_figures_are_checked(reference, needle):
    from vaebench.tasks import Reference

    base = {"model": "m", "architecture": "a", "metric": "bpd", "value": 2.9, "source": "s"}
    with pytest.raises(ValueError, match=needle):
        Reference(**{**base, **reference})
