"""Published dataset file formats: tiny files written exactly as the originals are laid out.

Every image is asymmetric (a transpose, a flip or a channel swap changes it), so a reader
that gets the orientation or the byte order wrong fails the round trip.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import scipy.io

from tests.helpers import write_amat
from vaebench.errors import DataError
from vaebench.formats import read_amat, read_cifar10_bin, read_omniglot_mat, sha256_file, to_nchw


def asymmetric_binary(n: int, side: int = 28, seed: int = 0) -> np.ndarray:
    """Random 0/1 images with a marker: the top-right pixel is on, the bottom-left is off."""
    images = np.random.default_rng(seed).integers(0, 2, size=(n, side, side), dtype=np.uint8)
    images[:, 0, side - 1] = 1
    images[:, side - 1, 0] = 0
    return images


def amat_line(values) -> bytes:
    return " ".join(str(v) for v in values).encode()


# --- binarized MNIST .amat ------------------------------------------------------------


def test_amat_round_trip(tmp_path):
    images = asymmetric_binary(5)
    path = tmp_path / "binarized_mnist_test.amat"
    write_amat(path, images)
    out = read_amat(path)
    assert out.dtype == np.uint8 and out.shape == (5, 28, 28)
    np.testing.assert_array_equal(out, images)
    assert out[0, 0, 27] == 1 and out[0, 27, 0] == 0  # upright, not transposed


def test_amat_tolerates_crlf_trailing_space_blank_tail_and_other_spacing(tmp_path):
    images = asymmetric_binary(4, side=4, seed=1)
    rows = [amat_line(image.ravel()) for image in images]
    rows[1] = rows[1] + b"  \t"  # trailing whitespace
    rows[2] = b"\t".join(rows[2].split(b" "))  # tabs instead of spaces
    rows[3] = b"  " + b"   ".join(rows[3].split(b" "))  # leading and repeated spaces
    path = tmp_path / "x.amat"
    path.write_bytes(b"\r\n".join(rows) + b"\r\n\r\n  \n")
    np.testing.assert_array_equal(read_amat(path, width=16), images)


def test_amat_without_final_newline(tmp_path):
    images = asymmetric_binary(2, side=3, seed=2)
    path = tmp_path / "x.amat"
    path.write_bytes(b"\n".join(amat_line(image.ravel()) for image in images))
    np.testing.assert_array_equal(read_amat(path, width=9), images)


def test_amat_many_lines_vectorized(tmp_path):
    images = asymmetric_binary(3000, seed=3)
    path = tmp_path / "binarized_mnist_valid.amat"
    chars = np.full((3000, 2 * 784), ord(" "), dtype=np.uint8)
    chars[:, 0::2] = images.reshape(3000, 784) + ord("0")
    chars[:, -1] = ord("\n")
    path.write_bytes(chars.tobytes())
    np.testing.assert_array_equal(read_amat(path), images)


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        (amat_line([0, 1] * 391 + [1]), "line 3 has 783 values, expected 784"),
        (amat_line([0, 1] * 392 + [1]), "line 3 has 785 values"),
        (b"", "line 3 has 0 values"),
        (amat_line([0, 1] * 391 + [2, 1]), "line 3 holds the value '2'"),
        (amat_line([0, 1] * 391 + ["1.0", 1]), "line 3 holds the value '1.0'"),
        (amat_line([0, 1] * 391 + ["x", 1]), "line 3 holds the value 'x'"),
    ],
)
def test_amat_bad_line_is_named(tmp_path, bad_line, expected):
    good = amat_line([1, 0] * 392)
    path = tmp_path / "broken.amat"
    path.write_bytes(b"\n".join([good, good, bad_line, good, bad_line]) + b"\n")
    with pytest.raises(DataError) as info:
        read_amat(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_amat_first_wrong_line_is_reported_whichever_path_finds_it(tmp_path):
    good = amat_line([1, 0] * 392)
    wrong_value = amat_line([1, 0] * 391 + [1, 7])  # original spacing: vectorized path
    wrong_count = amat_line([1, 0] * 100)  # another length: line-by-line path
    path = tmp_path / "broken.amat"
    path.write_bytes(b"\n".join([good, wrong_value, wrong_count]) + b"\n")
    with pytest.raises(DataError, match="line 2 holds the value '7'"):
        read_amat(path)
    path.write_bytes(b"\n".join([good, wrong_count, wrong_value]) + b"\n")
    with pytest.raises(DataError, match="line 2 has 200 values"):
        read_amat(path)


@pytest.mark.parametrize("content", [b"", b"\n\n", b"  \r\n"])
def test_amat_empty_file(tmp_path, content):
    path = tmp_path / "empty.amat"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"empty\.amat: empty file"):
        read_amat(path)


def test_amat_unreadable(tmp_path):
    with pytest.raises(DataError, match=r"missing\.amat: cannot read"):
        read_amat(tmp_path / "missing.amat")
    with pytest.raises(DataError, match="cannot read"):
        read_amat(tmp_path)  # a directory


def test_amat_width_must_be_square(tmp_path):
    with pytest.raises(ValueError, match="square"):
        read_amat(tmp_path / "x.amat", width=10)


# --- Omniglot chardata.mat -------------------------------------------------------------


def omniglot_images(n: int, seed: int) -> np.ndarray:
    """Grey float images, upright, with a bright top-right corner and a dark bottom-left."""
    images = np.random.default_rng(seed).uniform(0.2, 0.8, size=(n, 28, 28))
    images[:, 0, 27], images[:, 27, 0] = 1.0, 0.0
    return images


def chardata_columns(images: np.ndarray) -> np.ndarray:
    """(784, N) as in chardata.mat: one image per column, flattened column-major (MATLAB x(:))."""
    columns = np.empty((784, len(images)))
    for n, image in enumerate(images):
        for c in range(28):
            for r in range(28):
                columns[r + 28 * c, n] = image[r, c]
    return columns


def one_hot(labels: np.ndarray, classes: int = 50) -> np.ndarray:
    out = np.zeros((classes, len(labels)))
    out[labels, np.arange(len(labels))] = 1.0
    return out


def write_chardata(path, n_train: int = 6, n_test: int = 4, **override) -> dict:
    x_train, x_test = omniglot_images(n_train, 0), omniglot_images(n_test, 1)
    y_train, y_test = np.arange(n_train) % 50, (np.arange(n_test) * 7) % 50
    variables = {
        "data": chardata_columns(x_train),
        "testdata": chardata_columns(x_test),
        "target": one_hot(y_train),
        "testtarget": one_hot(y_test),
        "targetchar": (np.arange(n_train) % 55 + 1.0)[None, :],
        "testtargetchar": (np.arange(n_test) % 55 + 1.0)[None, :],
    }
    variables.update(override)
    scipy.io.savemat(path, {k: v for k, v in variables.items() if v is not None})
    return {"x_train": x_train, "x_test": x_test, "y_train": y_train, "y_test": y_test}


def test_omniglot_fixture_matches_the_iwae_loader(tmp_path):
    """yburda/iwae datasets.py: data.T.reshape((-1, 28, 28)).reshape((-1, 784), order='F')."""
    images = omniglot_images(3, 5)
    iwae = chardata_columns(images).T.reshape((-1, 28, 28)).reshape((-1, 784), order="F")
    np.testing.assert_array_equal(iwae, images.reshape(3, 784))


def test_omniglot_round_trip(tmp_path):
    path = tmp_path / "chardata.mat"
    expected = write_chardata(path)
    out = read_omniglot_mat(path)
    assert set(out) == {"x_train", "x_test", "y_train", "y_test"}
    for key in ("x_train", "x_test"):
        assert out[key].dtype == np.float32 and out[key].shape[1:] == (28, 28)
        assert out[key].flags.c_contiguous
        np.testing.assert_allclose(out[key], expected[key], rtol=1e-6)
        assert (out[key][:, 0, 27] == 1).all() and (out[key][:, 27, 0] == 0).all()
    for key in ("y_train", "y_test"):
        assert out[key].dtype == np.int64
        np.testing.assert_array_equal(out[key], expected[key])


def test_omniglot_without_targets_gives_images_only(tmp_path):
    path = tmp_path / "chardata.mat"
    write_chardata(path, target=None, testtarget=None)
    assert set(read_omniglot_mat(path)) == {"x_train", "x_test"}


def test_omniglot_missing_variable_lists_what_was_found(tmp_path):
    path = tmp_path / "chardata.mat"
    write_chardata(path, testdata=None)
    with pytest.raises(DataError, match=r"chardata\.mat: no variable 'testdata'") as info:
        read_omniglot_mat(path)
    assert "found: data, target, targetchar, testtarget, testtargetchar" in str(info.value)


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"data": np.zeros((100, 6))}, r"'data' has shape \(100, 6\); expected \(784, N\)"),
        ({"testdata": np.zeros((4, 784))}, r"'testdata' has shape \(4, 784\) \(transposed\?\)"),
        ({"target": one_hot(np.arange(7) % 50)}, r"'target' has shape \(50, 7\); expected"),
        ({"testtarget": one_hot(np.arange(3))}, r"'testtarget' has shape \(50, 3\)"),
    ],
)
def test_omniglot_bad_shapes(tmp_path, override, expected):
    path = tmp_path / "chardata.mat"
    write_chardata(path, **override)
    with pytest.raises(DataError, match=r"chardata\.mat: variable " + expected):
        read_omniglot_mat(path)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"not a MATLAB file at all\n" * 10, "not a readable MATLAB .mat file"),
        (b"", "not a readable MATLAB .mat file"),
        (b"\x01\x02\x03\x04" * 10, "not a readable MATLAB .mat file"),
    ],
)
def test_omniglot_not_a_mat_file(tmp_path, content, expected):
    path = tmp_path / "chardata.mat"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"chardata\.mat: " + expected):
        read_omniglot_mat(path)


def test_omniglot_truncated_and_missing(tmp_path):
    path = tmp_path / "chardata.mat"
    write_chardata(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"chardata\.mat: not a readable MATLAB"):
        read_omniglot_mat(path)
    with pytest.raises(DataError, match=r"nothere\.mat: cannot read"):
        read_omniglot_mat(tmp_path / "nothere.mat")


# --- CIFAR-10 binary version -----------------------------------------------------------


def cifar_images(n: int, seed: int) -> np.ndarray:
    """(n, 3, 32, 32) uint8 with distinct channels and an asymmetric marker."""
    images = np.random.default_rng(seed).integers(10, 240, size=(n, 3, 32, 32), dtype=np.uint8)
    images[:, 0, 0, 31], images[:, 1, 0, 31], images[:, 2, 0, 31] = 255, 128, 0
    images[:, :, 31, 0] = 1
    return images


def cifar_record(label: int, image: np.ndarray) -> bytes:
    """One record as published: label byte, then the R, G, B planes, each row by row."""
    record = bytearray([label])
    for channel in range(3):
        for row in range(32):
            for col in range(32):
                record.append(int(image[channel, row, col]))
    return bytes(record)


def write_cifar(root, records: int = 2) -> dict:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    xs, ys = [], []
    for b, name in enumerate(names):
        images = cifar_images(records, seed=b)
        labels = [(b + 3 * i) % 10 for i in range(records)]
        (folder / name).write_bytes(b"".join(map(cifar_record, labels, images)))
        xs.append(images)
        ys.append(np.array(labels))
    return {
        "x_train": np.concatenate(xs[:5]),
        "y_train": np.concatenate(ys[:5]),
        "x_test": xs[5],
        "y_test": ys[5],
        "folder": folder,
    }


@pytest.mark.parametrize("from_parent", [False, True])
def test_cifar10_round_trip(tmp_path, from_parent):
    expected = write_cifar(tmp_path)
    out = read_cifar10_bin(tmp_path if from_parent else expected["folder"])
    assert out["x_train"].shape == (10, 3, 32, 32) and out["x_test"].shape == (2, 3, 32, 32)
    for key in ("x_train", "x_test"):
        assert out[key].dtype == np.uint8
        np.testing.assert_array_equal(out[key], expected[key])
        assert (out[key][:, :, 0, 31] == [255, 128, 0]).all()  # R, G, B in order, upright
    for key in ("y_train", "y_test"):
        assert out[key].dtype == np.int64
        np.testing.assert_array_equal(out[key], expected[key])


def test_cifar10_missing_batches_are_named(tmp_path):
    folder = write_cifar(tmp_path)["folder"]
    (folder / "data_batch_3.bin").unlink()
    (folder / "test_batch.bin").unlink()
    with pytest.raises(DataError, match="cifar-10-batches-bin: missing") as info:
        read_cifar10_bin(tmp_path)
    message = str(info.value)
    assert "data_batch_3.bin, test_batch.bin" in message and "data_batch_1.bin" not in message
    assert '"CIFAR-10 binary version"' in message and "kriz/cifar.html" in message


def test_cifar10_python_version_is_recognised(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"pickle")
    with pytest.raises(DataError, match="Python version"):
        read_cifar10_bin(tmp_path)


def test_cifar10_not_a_directory(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: not a directory"):
        read_cifar10_bin(tmp_path / "nowhere")


def test_cifar10_truncated_batch(tmp_path):
    folder = write_cifar(tmp_path)["folder"]
    batch = folder / "data_batch_2.bin"
    batch.write_bytes(batch.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"data_batch_2\.bin: 6,046 bytes is not a whole number"):
        read_cifar10_bin(folder)
    batch.write_bytes(b"")
    with pytest.raises(DataError, match=r"data_batch_2\.bin: empty file"):
        read_cifar10_bin(folder)


def test_cifar10_label_out_of_range(tmp_path):
    folder = write_cifar(tmp_path)["folder"]
    batch = folder / "test_batch.bin"
    raw = bytearray(batch.read_bytes())
    raw[3073] = 42  # the second record's label byte
    batch.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"test_batch\.bin: record 1 has label 42"):
        read_cifar10_bin(folder)


# --- image layout ----------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_nhwc_is_detected(channels):
    x = np.arange(2 * 5 * 6 * channels).reshape(2, 5, 6, channels)
    out, layout = to_nchw(x)
    assert layout == "nhwc" and out.shape == (2, channels, 5, 6) and out.flags.c_contiguous
    for c in range(channels):
        np.testing.assert_array_equal(out[:, c], x[..., c])


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 28, 28), (2, 4, 8, 8), (2, 2, 5, 5)])
def test_nchw_is_kept(shape):
    x = np.zeros(shape)
    out, layout = to_nchw(x)
    assert layout == "nchw" and out is x


def test_ambiguous_auto_is_nchw_and_explicit_layout_is_obeyed():
    x = np.arange(2 * 3 * 5 * 3).reshape(2, 3, 5, 3)
    out, layout = to_nchw(x)
    assert layout == "nchw" and out is x
    out, layout = to_nchw(x, "nhwc")
    assert layout == "nhwc" and out.shape == (2, 3, 3, 5)
    np.testing.assert_array_equal(out[:, 2], x[..., 2])
    y = np.zeros((2, 5, 6, 3))  # looks NHWC, but the caller says NCHW
    out, layout = to_nchw(y, "nchw")
    assert layout == "nchw" and out is y


def test_grey_and_flat_are_unchanged():
    grey, flat = np.zeros((4, 28, 28)), np.zeros((4, 784))
    out, layout = to_nchw(grey)
    assert layout == "nchw" and out is grey
    out, layout = to_nchw(flat, "nhwc")
    assert layout == "flat" and out is flat


def test_bad_layout_and_rank():
    with pytest.raises(DataError, match=r"train\.npz\[x_train\]: unknown image layout 'hwc'"):
        to_nchw(np.zeros((2, 3, 4, 4)), "hwc", source="train.npz[x_train]")
    with pytest.raises(DataError, match=r"x\.npz: expected images .* got \(2, 3, 4, 4, 1\)"):
        to_nchw(np.zeros((2, 3, 4, 4, 1)), source="x.npz")


# --- checksums -------------------------------------------------------------------------


def test_sha256_file(tmp_path):
    payload = b"vaebench" * 1000 + b"\x00\xff"
    path = tmp_path / "blob.bin"
    path.write_bytes(payload)
    expected = hashlib.sha256(payload).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(path, chunk_size=7) == expected  # many chunks, a short last one
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()
    with pytest.raises(DataError, match=r"absent\.bin: cannot read"):
        sha256_file(tmp_path / "absent.bin")
