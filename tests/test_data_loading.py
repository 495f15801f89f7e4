"""The data loaders' contracts, each answer known in advance: split sizes at their edges,
which labels travel with which split, how integers are scaled, and every error's exact text
(the one line a user reads, naming the file, the array and what to do).
"""

from __future__ import annotations

import io
import warnings
import zipfile

import numpy as np
import pytest
import torch

from tests.helpers import write_idx
from vaebench import data
from vaebench.data import Dataset, deterministic_split, load_path, to_images, to_labels
from vaebench.errors import DataError


def message(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def x_of(n: int, d: int = 3) -> torch.Tensor:
    return torch.arange(n * d, dtype=torch.float32).reshape(n, d) / (n * d)


# -- the Dataset container -------------------------------------------------------------------


def test_dataset_errors_name_the_split():
    assert message(Dataset, "d", x_of(1), x_of(2)) == (
        "d: x_train must hold at least 2 examples, got shape (1, 3)"
    )
    assert message(Dataset, "d", x_of(4), x_of(2), x_valid=torch.zeros(0, 3)) == (
        "d: x_valid must hold at least 1 examples, got shape (0, 3)"
    )
    Dataset("d", x_of(4), x_of(2), x_valid=x_of(1))  # one validation example is enough
    assert message(Dataset, "d", x_of(4), torch.zeros(5)) == (
        "d: x_test must hold at least 2 examples, got shape (5,)"
    )
    bad = x_of(4)
    bad[2, 1] = float("inf")
    assert message(Dataset, "d", x_of(4), bad) == "d: x_test contains NaN or infinite values"
    assert message(Dataset, "d", x_of(4), x_of(2), x_valid=x_of(2, 4)) == (
        "d: train and valid examples differ in shape ((3,) vs (4,))"
    )
    assert message(Dataset, "d", x_of(4), x_of(2), y_train=torch.zeros(3)) == (
        "d: y_train has 3 labels for 4 examples"
    )
    assert message(Dataset, "d", x_of(4), x_of(2), x_valid=x_of(2), y_valid=torch.zeros(1)) == (
        "d: y_valid has 1 labels for 2 examples"
    )


def test_dataset_properties():
    flat = Dataset("d", x_of(4), x_of(2), x_valid=x_of(3))
    assert flat.layout == "flat" and flat.input_shape == (3,)
    assert flat.sizes() == {"n_train": 4, "n_valid": 3, "n_test": 2}
    assert Dataset("d", x_of(4), x_of(2)).sizes() == {"n_train": 4, "n_valid": 0, "n_test": 2}
    images = Dataset("d", torch.zeros(4, 1, 2, 2), torch.zeros(2, 1, 2, 2))
    assert images.layout == "nchw" and images.input_shape == (1, 2, 2)
    assert Dataset("d", x_of(4), x_of(2), layout="nhwc").layout == "nhwc"
    assert flat.unit_interval
    above = Dataset("d", x_of(4), x_of(2), x_valid=x_of(2) + 1.0)
    assert not above.unit_interval  # the validation split alone leaves [0, 1]
    assert not Dataset("d", x_of(4), x_of(2) - 0.5).unit_interval
    labels = torch.zeros(4, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    assert Dataset("d", x_of(4), x_of(2), *labels).has_labels
    assert not Dataset("d", x_of(4), x_of(2), y_train=labels[0]).has_labels
    assert not Dataset("d", x_of(4), x_of(2), y_test=labels[1]).has_labels


# -- validation hold-out and the train/test split --------------------------------------------


def test_with_validation_edges_and_labels():
    y = torch.arange(10)
    full = Dataset("d", x_of(10), x_of(2), y_train=y, y_test=torch.arange(2))
    held = data.with_validation(full, 0.2)
    assert held.sizes() == {"n_train": 8, "n_valid": 2, "n_test": 2}
    order = torch.randperm(10, generator=torch.Generator().manual_seed(data.SPLIT_SEED))
    assert torch.equal(held.y_train, order[:8]) and torch.equal(held.y_valid, order[8:])
    assert torch.equal(held.x_valid, full.x_train[order[8:]])  # labels follow their images
    last = data.with_validation(full, 0.5, count=3, last=True)
    assert torch.equal(last.y_valid, torch.tensor([7, 8, 9]))
    assert torch.equal(last.y_train, torch.arange(7))
    assert data.with_validation(full, 0.5, count=8).sizes()["n_train"] == 2  # leaves 2
    assert data.with_validation(full, 0.1).sizes()["n_valid"] == 1
    unlabelled = data.with_validation(Dataset("d", x_of(10), x_of(2)), 0.3)
    assert unlabelled.y_train is None and unlabelled.y_valid is None
    assert data.with_validation(held, 0.9) is held  # a dataset with a validation split
    for count in (0, 9):
        assert message(data.with_validation, full, 0.1, count=count) == (
            f"d: cannot hold out {count} validation examples from 10 training examples "
            "(at least 1, leaving 2); change --valid-fraction or add x_valid to the data"
        )


def test_deterministic_split_edges():
    y = torch.arange(10)
    _, x_test, y_train, y_test = deterministic_split(x_of(10), y)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y_test, order[:2]) and torch.equal(y_train, order[2:])
    assert torch.equal(x_test, x_of(10)[order[:2]])
    two = deterministic_split(x_of(2), None)
    assert (two[0].shape[0], two[1].shape[0], two[2], two[3]) == (1, 1, None, None)
    three = deterministic_split(x_of(3), torch.arange(3), test_fraction=0.9)
    assert three[1].shape[0] == 2 and three[0].shape[0] == 1  # at most n - 1 for testing
    assert deterministic_split(x_of(6), None, test_fraction=0.01)[1].shape[0] == 1
    assert message(deterministic_split, x_of(1), None) == (
        "need at least 2 examples to split into train and test, got 1"
    )


# -- arrays to images and labels -------------------------------------------------------------


def test_to_images_scales_and_refuses():
    as_float = to_images(np.array([[0, 255], [128, 3]], dtype=np.uint8), "s")
    assert as_float.dtype == torch.float32
    assert torch.equal(as_float, torch.tensor([[0, 255], [128, 3]]) / 255.0)
    assert torch.equal(to_images(np.array([[0, 1], [1, 1]]), "s"), torch.tensor([[0.0, 1], [1, 1]]))
    assert torch.equal(
        to_images(np.array([[0, 300], [600, 3]]), "s")[1], torch.tensor([1.0, 0.005])
    )
    top = to_images(np.array([[0, 150], [1, 1]]), "s", top=300)  # the dataset's top, not 150
    assert torch.equal(top[0], torch.tensor([0, 0.5]))
    assert torch.equal(to_images(np.array([[True, False]] * 2), "s")[0], torch.tensor([1.0, 0]))
    assert to_images(np.zeros((2, 3, 4)), "s").shape == (2, 1, 3, 4)  # grey images
    assert to_images(np.zeros((2, 2, 3, 4)), "s").shape == (2, 2, 3, 4)
    assert to_images(np.zeros((3, 1), dtype=np.int64), "s").max() == 0  # all zero: no division
    cases = [
        (np.array([["a", "b"]] * 2), "s: images must be numeric, got dtype <U1"),
        (np.zeros((2, 2), dtype=complex), "s: images must be real numbers, got dtype complex128"),
        (np.zeros((2, 0)), "s: examples hold no values (shape (2, 0))"),
        (np.zeros((1, 0)), "s: examples hold no values (shape (1, 0))"),
        (np.zeros(5), "s: expected images of shape (N, H, W), (N, C, H, W) or (N, D), got (5,)"),
        (np.zeros((0, 3)), "s: holds no examples"),
        (np.array([[1, -2], [0, 0]]), "s: integer images must be non-negative, found -2"),
        (np.array([[0.5, np.nan], [0, 0]]), "s: contains NaN or infinite values"),
        (
            np.array([[1e300, 0.0], [0, 0]]),
            "s: values beyond the float32 range (largest magnitude 1e+300)",
        ),
    ]
    for array, expected in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's own overflow warning stays silent
            assert message(to_images, array, "s") == expected
    assert to_images(np.array([[0, 2], [1, 1]]), "s")[0, 1] == pytest.approx(2 / 255)  # 8-bit
    assert to_images(np.array([[0, 256], [1, 1]]), "s")[0, 1] == 1.0  # beyond 8 bits: its top


def test_to_labels():
    assert to_labels(None, 3, "s") is None
    labels = to_labels(np.array([2.0, 0.0, 65535.0]), 3, "s")
    assert labels.dtype == torch.int64 and labels.tolist() == [2, 0, 65535]
    assert to_labels(np.array([], dtype=np.int64), 0, "s").shape == (0,)
    assert to_labels(np.array([1, 0], dtype=np.float32), 2, "s").tolist() == [1, 0]
    cases = [
        (np.zeros((3, 1)), "s: expected 3 labels in a 1-D array, got shape (3, 1)"),
        (np.zeros(4), "s: expected 3 labels in a 1-D array, got shape (4,)"),
        (np.array([0.5, 1, 2]), "s: labels must be integers, got dtype float64"),
        (np.array([np.inf, 1, 2]), "s: labels must be integers, got dtype float64"),
        (np.array(["a", "b", "c"]), "s: labels must be integers, got dtype <U1"),
        (np.array([-1, 1, 2]), "s: labels must lie in [0, 65536), found -1 to 2"),
        (np.array([0, 1, 65536]), "s: labels must lie in [0, 65536), found 0 to 65536"),
    ]
    for array, expected in cases:
        assert message(to_labels, array, 3, "s") == expected


def test_common_top_is_over_integer_splits_only():
    arrays = [np.array([3, 9]), np.array([1.0, 500.0]), np.array([], dtype=int), np.array([12])]
    assert data.common_top(arrays) == 12
    assert data.common_top([np.array([0.5])]) is None
    assert data.common_top(iter([None, np.array([2], dtype=np.uint8)])) == 2


# -- .npz archives ---------------------------------------------------------------------------


def test_npz_keras_layout_with_every_split_and_label(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        f"x_{s}": rng.integers(0, 256, (n, 2, 2), dtype=np.uint8)
        for s, n in (("train", 6), ("valid", 3), ("test", 4))
    }
    labels = {f"y_{key[2:]}": np.arange(len(a)) for key, a in arrays.items()}
    path = tmp_path / "d.npz"
    np.savez(path, **arrays, **labels)
    dataset = load_path(str(path))
    assert (dataset.name, dataset.files, dataset.layout) == (str(path), (str(path),), "nchw")
    assert dataset.sizes() == {"n_train": 6, "n_valid": 3, "n_test": 4}
    assert torch.equal(dataset.x_valid[:, 0], torch.from_numpy(arrays["x_valid"]) / 255.0)
    assert dataset.y_valid.tolist() == [0, 1, 2] and dataset.y_test.tolist() == [0, 1, 2, 3]
    np.savez(path, **arrays, y_train=labels["y_train"], y_test=labels["y_test"])
    partial = load_path(str(path))  # no y_valid: no split keeps labels
    assert partial.y_train is None and partial.y_valid is None and partial.y_test is None


def test_npz_single_array_with_a_validation_array(tmp_path):
    path = tmp_path / "d.npz"
    x, x_valid = np.linspace(0, 1, 20).reshape(10, 2), np.full((3, 2), 0.5)
    np.savez(path, x=x, y=np.arange(10), x_valid=x_valid, y_valid=np.arange(3))
    dataset = load_path(str(path))
    assert dataset.sizes() == {"n_train": 8, "n_valid": 3, "n_test": 2}
    assert dataset.y_valid.tolist() == [0, 1, 2] and dataset.has_labels
    assert (dataset.name, dataset.files, dataset.layout) == (str(path), (str(path),), "flat")
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    assert dataset.y_test.tolist() == order[:2].tolist()
    np.savez(path, x=x, y=np.arange(10), x_valid=x_valid)  # validation without labels
    unlabelled = load_path(str(path))
    assert unlabelled.y_train is None and unlabelled.y_test is None and unlabelled.y_valid is None
    np.savez(path, x=x, x_valid=x_valid)
    assert load_path(str(path)).y_valid is None
    np.savez(path, x=x[:1])
    assert message(load_path, str(path)) == (
        f"{path}: need at least 2 examples to split into train and test, got 1"
    )


def test_npz_scales_all_splits_by_one_top(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.array([[0, 1000], [2, 3]]), x_test=np.array([[0, 500], [1, 1]]))
    dataset = load_path(str(path))
    assert dataset.x_test[0, 1].item() == 0.5  # the test split is not stretched to its own top


def test_npz_channels_last(tmp_path):
    path = tmp_path / "d.npz"
    x = np.zeros((4, 5, 5, 3), dtype=np.uint8)
    np.savez(path, x_train=x, x_test=x[:2])
    assert load_path(str(path)).input_shape == (3, 5, 5)
    assert load_path(str(path), {"layout": "nhwc"}).layout == "nhwc"
    assert data.load_npz(path).input_shape == (3, 5, 5)  # "auto" by default
    np.savez(path, x_train=x, x_test=np.zeros((2, 3, 5, 5), dtype=np.uint8))
    assert message(load_path, str(path)) == (
        f"{path}: the arrays have different layouts (nchw, nhwc)"
    )


def test_npz_errors(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((3, 2, 2, 2, 2)), x_test=np.zeros((2, 2)))
    assert message(load_path, str(path)).startswith(
        f"{path}[x_train]: expected images of shape (N, C, H, W), (N, H, W, C), (N, H, W) or "
    )
    np.savez(path, x_test=np.zeros((3, 2)))
    assert message(load_path, str(path)) == f"{path}: has x_test but no x_train"
    np.savez(path, x_train=np.zeros((3, 2)))
    assert message(load_path, str(path)) == f"{path}: has x_train but no x_test"
    np.savez(path, images=np.zeros((3, 2)), b=np.zeros(1))
    assert message(load_path, str(path)) == (
        f"{path}: expected arrays x_train and x_test (or a single x), found b, images"
    )
    np.savez(path)
    assert message(load_path, str(path)) == (
        f"{path}: expected arrays x_train and x_test (or a single x), found no arrays"
    )
    np.savez(path, x=np.array([[1, 2], [3, 4]], dtype=object))
    assert message(load_path, str(path)) == f"{path}[x.npy]: holds Python objects, not numbers"
    path.write_bytes(b"PK not really")
    assert message(load_path, str(path)).startswith(
        f"{path}: not a readable .npz archive (BadZipFile: "
    )


def crafted_npz(path, shape: tuple[int, ...], payload: bytes) -> None:
    """One member whose header declares ``shape`` of float64 but holds ``payload``."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = shape
    with zipfile.ZipFile(path, "w") as archive, archive.open("x.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, header)
        member.write(payload)


def test_npz_header_that_declares_more_than_it_holds(tmp_path):
    path = tmp_path / "d.npz"
    crafted_npz(path, (1000, 1000), b"\0" * 16)
    text = message(load_path, str(path))
    size = zipfile.ZipFile(path).getinfo("x.npy").file_size
    assert text == (
        f"{path}[x.npy]: header declares shape (1000, 1000) (8,000,000 bytes) "
        f"but the member holds {size:,} bytes (corrupt or crafted)"
    )
    exact = tmp_path / "exact.npz"  # a member exactly as large as declared passes the check
    np.savez(exact, x=np.zeros((4, 2)))
    data.check_npz_headers(exact)


def test_npz_member_as_large_as_its_declared_data_passes_the_header_check(tmp_path):
    """The member's size counts its header too, so a member of exactly the declared data size
    is short by its header: the header check lets it through and numpy's reader refuses it."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (32,)}
    )
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as archive, archive.open("x.npy", "w") as member:
        member.write(header.getvalue() + b"\0" * (32 * 8 - len(header.getvalue())))
    assert zipfile.ZipFile(path).getinfo("x.npy").file_size == 32 * 8
    data.check_npz_headers(path)
    assert message(load_path, str(path)).startswith(f"{path}: not a readable .npz archive (")


def test_npz_header_version_2_is_read(tmp_path):
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, n in (("x_train", 4), ("x_test", 2)):
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, np.full((n, 2), 0.25), version=(2, 0))
    assert load_path(str(path)).x_train.shape == (4, 2)


# -- IDX folders -----------------------------------------------------------------------------


def idx_folder(tmp_path, *, labels: bool = True, dotted: bool = False):
    rng = np.random.default_rng(1)
    x_train, x_test = rng.integers(0, 256, (6, 2, 2)), rng.integers(0, 256, (3, 2, 2))
    name = (lambda s: s.replace("-idx", ".idx")) if dotted else (lambda s: s)
    write_idx(tmp_path / name("train-images-idx3-ubyte"), x_train)
    write_idx(tmp_path / name("t10k-images-idx3-ubyte"), x_test)
    if labels:
        write_idx(tmp_path / name("train-labels-idx1-ubyte"), np.arange(6))
        write_idx(tmp_path / name("t10k-labels-idx1-ubyte"), np.arange(3))
    return x_train, x_test


def test_idx_folder_files_and_labels(tmp_path):
    x_train, _ = idx_folder(tmp_path)
    dataset = load_path(str(tmp_path))
    assert dataset.name == str(tmp_path)
    assert [p.rsplit("/", 1)[1] for p in dataset.files] == [
        "train-images-idx3-ubyte",
        "t10k-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    assert dataset.y_train.tolist() == list(range(6)) and dataset.y_test.tolist() == [0, 1, 2]
    assert torch.equal(dataset.x_train[:, 0], torch.from_numpy(x_train) / 255.0)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    half = load_path(str(tmp_path))
    assert half.y_train is None and half.y_test is None and len(half.files) == 3


def test_idx_folder_scales_both_splits_by_one_top(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.array([[[0, 1], [1, 0]]] * 3))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.array([[[0, 255], [51, 0]]] * 2))
    dataset = load_path(str(tmp_path))
    assert dataset.x_train.max().item() == pytest.approx(1 / 255)  # not stretched to 1
    assert dataset.x_test.max().item() == 1.0
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.array([[[0, 1], [1, 0]]] * 2))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.array([[[0, 255], [51, 0]]] * 3))
    assert load_path(str(tmp_path)).x_test.max().item() == pytest.approx(1 / 255)


def test_idx_folder_errors_name_the_file(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((0, 2, 2)))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 2, 2)))
    assert message(load_path, str(tmp_path)) == (
        f"{tmp_path / 'train-images-idx3-ubyte'}: holds no examples"
    )
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2)))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((0, 2, 2)))
    assert message(load_path, str(tmp_path)) == (
        f"{tmp_path / 't10k-images-idx3-ubyte'}: holds no examples"
    )
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 2, 2)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(4))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(2))
    assert message(load_path, str(tmp_path)) == (
        f"{tmp_path / 'train-labels-idx1-ubyte'}: expected 3 labels in a 1-D array, got shape (4,)"
    )
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(3))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(1))
    assert message(load_path, str(tmp_path)) == (
        f"{tmp_path / 't10k-labels-idx1-ubyte'}: expected 2 labels in a 1-D array, got shape (1,)"
    )


def test_idx_folder_with_dotted_names(tmp_path):
    idx_folder(tmp_path, dotted=True)
    dataset = load_path(str(tmp_path))
    assert dataset.files[0].endswith("train-images.idx3-ubyte") and dataset.has_labels


def test_idx_folder_errors(tmp_path):
    assert message(load_path, str(tmp_path)) == (
        f"{tmp_path}: no train-images-idx3-ubyte[.gz] in this directory (expected MNIST IDX files)"
    )
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2)))
    assert message(load_path, str(tmp_path)) == (
        f"{tmp_path}: no t10k-images-idx3-ubyte[.gz] in this directory (expected MNIST IDX files)"
    )


def test_read_idx_errors(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    for raw, expected in [
        (b"\0\0", "not an IDX file (bad magic number)"),
        (b"\1\0\x08\1" + b"\0" * 8, "not an IDX file (bad magic number)"),
        (b"\0\1\x08\1" + b"\0" * 8, "not an IDX file (bad magic number)"),
        (b"\0\0\x07\1" + b"\0" * 8, "not an IDX file (bad magic number)"),
        (b"\0\0\x08\0", "truncated IDX header"),
        (b"\0\0\x08\2\0\0\0\1", "truncated IDX header"),
        (
            b"\0\0\x0d\1\0\0\0\2" + b"\0" * 4,
            "IDX header announces shape (2,) (8 bytes) but the file holds 4 bytes of data "
            "(truncated or corrupt)",
        ),
    ]:
        path.write_bytes(raw)
        assert message(data.read_idx, path) == f"{path}: {expected}", raw
    path.write_bytes(b"\0\0\x08\1\0\0\0\0")  # a header and no data: zero examples
    assert data.read_idx(path).shape == (0,)
    path.write_bytes(b"\0\0\x0d\1\0\0\0\2" + np.array([1.5, -2], dtype=">f4").tobytes())
    assert data.read_idx(path).tolist() == [1.5, -2.0]  # big-endian float32
    gz = tmp_path / "x.gz"
    gz.write_bytes(b"not gzip")
    assert message(data.read_idx, gz).startswith(f"{gz}: cannot read IDX file (BadGzipFile: ")


# -- data paths and options ------------------------------------------------------------------


def test_load_path_options_and_errors(tmp_path):
    assert message(load_path, "x.npz", {"n_train": 5}) == (
        "-D n_train: a data file accepts only layout (other options belong to named datasets)"
    )
    assert message(load_path, "x.npz", {"layout": "hwc"}) == (
        "-D layout=hwc: use one of auto, nchw, nhwc"
    )
    missing = tmp_path / "missing.npz"
    assert message(load_path, str(missing)) == f"{missing}: no such file or directory"
    text = tmp_path / "d.txt"
    text.write_text("1")
    assert message(load_path, str(text)) == (
        f"{text}: unsupported data file; use a .npz archive or a directory of MNIST IDX files"
    )


def test_binarized():
    probs = Dataset("d", torch.full((50, 4), 0.5), torch.full((20, 4), 0.5), x_valid=x_of(20, 4))
    assert data.binarized(probs, "none") is probs
    static = data.binarized(probs, "static")
    for split in ("train", "valid", "test"):
        x = getattr(static, f"x_{split}")
        assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert 0.3 < static.x_train.mean() < 0.7  # a Bernoulli(0.5) sample, not a threshold
    dynamic = data.binarized(probs, "dynamic")
    assert torch.equal(dynamic.x_train, probs.x_train)  # the loop samples each batch
    generator = torch.Generator().manual_seed(data.BINARIZE_SEED)  # the same splits every run
    for split in ("valid", "test"):
        expected = torch.bernoulli(getattr(probs, f"x_{split}"), generator=generator)
        assert torch.equal(getattr(dynamic, f"x_{split}"), expected)
    generator = torch.Generator().manual_seed(data.BINARIZE_SEED)
    for split in ("train", "valid", "test"):
        expected = torch.bernoulli(getattr(probs, f"x_{split}"), generator=generator)
        assert torch.equal(getattr(static, f"x_{split}"), expected)
    no_valid = data.binarized(Dataset("d", x_of(4), x_of(2)), "static")
    assert no_valid.x_valid is None
    assert (
        message(data.binarized, probs, "soft")
        == "--binarize soft: use one of none, static, dynamic"
    )
    wide = Dataset("wide", x_of(4) * 3, x_of(2))
    assert message(data.binarized, wide, "dynamic") == (
        "wide: --binarize dynamic needs data in [0, 1] (values are probabilities)"
    )
    sample = data.sample_binary(torch.full((1000,), 0.25))
    assert set(sample.unique().tolist()) == {0.0, 1.0} and 0.15 < sample.mean() < 0.35
