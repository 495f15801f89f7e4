"""Dataset sources: digits, synthetic, .npz (both layouts), MNIST IDX folders, and bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import run_cli, write_idx
from vaebench.data import Dataset, load_path, read_idx
from vaebench.errors import DataError
from vaebench.plugins.datasets import digits, synthetic


def is_binary(dataset) -> bool:
    return all(((x == 0) | (x == 1)).all() for x in (dataset.x_train, dataset.x_test))


def test_digits_fixed_split_with_labels():
    a, b = digits(seed=0), digits(seed=7)
    assert a.input_shape == (1, 8, 8)
    assert a.sizes() == {"n_train": 1293, "n_valid": 144, "n_test": 360}
    assert torch.equal(a.x_test, b.x_test), "the digits split must not depend on the seed"
    assert torch.equal(a.x_valid, b.x_valid)
    # The three splits are disjoint: no test or validation image is also a training image.
    rows = {tuple(x.flatten().tolist()): "train" for x in a.x_train}
    assert not any(tuple(x.flatten().tolist()) in rows for x in torch.cat([a.x_valid, a.x_test]))
    assert a.has_labels and set(a.y_test.tolist()) == set(range(10))
    assert a.unit_interval and not is_binary(a)
    assert float(a.x_train.max()) == 1.0


@pytest.mark.parametrize("side", [2, 7, 16])
def test_synthetic_is_sized_by_options_and_deterministic(side):
    a = synthetic(seed=3, n_train=40, n_test=9, side=side, classes=3)
    b = synthetic(seed=3, n_train=40, n_test=9, side=side, classes=3)
    assert a.x_train.shape == (40, 1, side, side) and a.x_test.shape == (9, 1, side, side)
    assert torch.equal(a.x_train, b.x_train)
    assert a.unit_interval
    assert not torch.equal(
        a.x_train, synthetic(seed=4, n_train=40, n_test=9, side=side, classes=3).x_train
    )
    assert is_binary(synthetic(seed=0, n_train=10, n_test=5, binary=1))


def test_synthetic_rejects_bad_options():
    with pytest.raises(DataError, match="n_train"):
        synthetic(n_train=0)


def test_npz_keras_layout_scales_integers(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (30, 5, 6), dtype=np.uint8),
        x_test=rng.integers(0, 256, (10, 5, 6), dtype=np.uint8),
        y_train=rng.integers(0, 10, 30),
        y_test=rng.integers(0, 10, 10),
    )
    data = load_path(str(path))
    assert data.input_shape == (1, 5, 6) and data.x_train.dtype == torch.float32
    assert data.unit_interval and data.has_labels
    raw = np.load(path)["x_train"]
    np.testing.assert_allclose(data.x_train[:, 0].numpy(), raw / 255.0, rtol=1e-6)


def test_npz_single_array_split_is_deterministic_and_binary(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "bits.npz"
    x = rng.integers(0, 2, (50, 12))
    np.savez(path, x=x, y=np.arange(50) % 3)
    first, second = load_path(str(path)), load_path(str(path))
    assert first.x_train.shape == (40, 12) and first.x_test.shape == (10, 12)
    assert torch.equal(first.x_test, second.x_test) and torch.equal(first.y_test, second.y_test)
    assert is_binary(first)
    # No example lost or duplicated by the split.
    together = torch.cat([first.x_train, first.x_test])
    assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, x.astype(float).tolist()))


@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory(tmp_path, compress):
    rng = np.random.default_rng(2)
    suffix = ".gz" if compress else ""
    x_train, x_test = rng.integers(0, 256, (20, 4, 4)), rng.integers(0, 256, (6, 4, 4))
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", x_train, compress=compress)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", x_test, compress=compress)
    write_idx(
        tmp_path / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 10, 20), compress=compress
    )
    write_idx(
        tmp_path / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, 6), compress=compress
    )
    data = load_path(str(tmp_path))
    assert data.x_train.shape == (20, 1, 4, 4) and data.has_labels
    np.testing.assert_allclose(data.x_test[:, 0].numpy(), x_test / 255.0, rtol=1e-6)


def _corrupt_files(tmp_path):
    rng = np.random.default_rng(3)
    not_zip = tmp_path / "garbage.npz"
    not_zip.write_bytes(b"this is not a zip archive")
    wrong_keys = tmp_path / "wrong.npz"
    np.savez(wrong_keys, images=rng.random((4, 3)))
    half = tmp_path / "half.npz"
    np.savez(half, x_train=rng.random((4, 3)))
    bad_shape = tmp_path / "shape.npz"
    np.savez(bad_shape, x_train=rng.random((4, 3, 3)), x_test=rng.random((4, 3, 2)))
    nan = tmp_path / "nan.npz"
    np.savez(nan, x=np.full((5, 3), np.nan))
    labels = tmp_path / "labels.npz"
    np.savez(
        labels,
        x_train=rng.random((4, 3)),
        x_test=rng.random((2, 3)),
        y_train=np.arange(3),
        y_test=np.arange(2),
    )
    truncated = tmp_path / "trunc"
    truncated.mkdir()
    write_idx(truncated / "train-images-idx3-ubyte", rng.integers(0, 255, (5, 4, 4)))
    write_idx(truncated / "t10k-images-idx3-ubyte", rng.integers(0, 255, (5, 4, 4)))
    blob = (truncated / "t10k-images-idx3-ubyte").read_bytes()
    (truncated / "t10k-images-idx3-ubyte").write_bytes(blob[:-7])
    magic = tmp_path / "magic"
    magic.mkdir()
    (magic / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + b"\0" * 64)
    (magic / "t10k-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + b"\0" * 64)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    text = tmp_path / "data.txt"
    text.write_text("1,2,3")
    return {
        "not a readable .npz": not_zip,
        "expected arrays x_train and x_test": wrong_keys,
        "has x_train but no x_test": half,
        "differ in shape": bad_shape,
        "NaN": nan,
        "expected 4 labels": labels,
        "truncated or corrupt": truncated,
        "bad magic": magic,
        "no train-images-idx3-ubyte": empty_dir,
        "unsupported data file": text,
        "no such file": tmp_path / "missing.npz",
    }


def test_bad_files_give_precise_errors(tmp_path):
    for expected, path in _corrupt_files(tmp_path).items():
        with pytest.raises(DataError) as info:
            load_path(str(path))
        message = str(info.value)
        assert expected in message and str(path) in message, (expected, message)
        assert "\n" not in message


def test_bad_file_on_the_command_line_exits_2_without_traceback(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"\x00\x01 not an archive")
    done = run_cli("run", "--dataset", str(path), "--out", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0]
    assert not (tmp_path / "out").exists(), "no half-made run folder for unusable data"


def test_read_idx_rejects_trailing_garbage(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    write_idx(path, np.arange(5))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="holds 6 bytes"):
        read_idx(path)


def test_dataset_validates_shapes():
    with pytest.raises(DataError, match="differ in shape"):
        Dataset("x", torch.zeros(3, 4), torch.zeros(3, 5))
