"""Readers for the files that standard VAE benchmark datasets are published as.

The benchmark literature reports numbers on specific files: the fixed binarization of MNIST
(Larochelle & Murray's ``binarized_mnist_*.amat``), the 28x28 Omniglot ``chardata.mat`` of the
IWAE paper (Burda et al.) and the CIFAR-10 binary batches. Comparing against those numbers
means reading exactly those files, in their own layout, rather than a re-export of unknown
provenance. Each reader returns plain numpy arrays; every problem with a file becomes a
one-line ``DataError`` naming the file, what is wrong and, where it helps, what to do.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from vaebench.errors import DataError

AMAT_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
OMNIGLOT_URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

OMNIGLOT_SIDE = 28
CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = "test_batch.bin"
CIFAR10_RECORD = 1 + 3 * 32 * 32  # one label byte, then the R, G and B planes
LAYOUTS = ("auto", "nchw", "nhwc")
CHANNEL_COUNTS = (1, 3, 4)

_ZERO, _SPACE, _TAB = ord("0"), ord(" "), ord("\t")


def _shown(token: bytes) -> str:
    """A token from a file as it may appear in a one-line message."""
    text = token[:20].decode("ascii", errors="backslashreplace")
    return repr(text + ("..." if len(token) > 20 else ""))


def _check_amat_line(path: Path, number: int, line: bytes, width: int) -> np.ndarray:
    """One line of a .amat file in any whitespace spacing: its ``width`` values as uint8."""
    tokens = line.split()
    if len(tokens) != width:
        raise DataError(
            f"{path}: line {number} has {len(tokens)} values, expected {width} "
            "(one binarized image per line; is the file truncated or not a .amat file?)"
        )
    joined = b"".join(tokens)
    values = np.frombuffer(joined, dtype=np.uint8) - np.uint8(_ZERO)
    if len(joined) == width and (values <= 1).all():
        return values
    bad = next(token for token in tokens if token not in (b"0", b"1"))
    raise DataError(
        f"{path}: line {number} holds the value {_shown(bad)}; a binarized .amat "
        "file holds only 0 and 1"
    )


def read_amat(path: Path, *, width: int = 784) -> np.ndarray:
    """Larochelle & Murray's binarized MNIST text file as uint8 ``(N, side, side)``.

    One image per line, ``width`` values ``0``/``1`` separated by spaces, rows of the image
    one after the other. Lines in the original spacing (one space or tab between values) are
    parsed in one vectorized pass; others (repeated spaces) line by line. CRLF line ends and
    trailing whitespace or blank lines are accepted.
    """
    side = math.isqrt(width)
    if width <= 0 or side * side != width:
        raise ValueError(f"width must be a positive square number of pixels, got {width}")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read .amat file ({type(exc).__name__}: {exc})") from None
    lines = [line.strip() for line in raw.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError(
            f"{path}: empty file; expected one line of {width} values 0/1 per image, as in "
            f"the binarized MNIST files from {AMAT_URL}"
        )

    canonical = 2 * width - 1  # "v v v ... v": values at even offsets, spaces at odd ones
    is_canonical = np.fromiter((len(line) == canonical for line in lines), bool, len(lines))
    fast = np.flatnonzero(is_canonical)
    out = np.empty((len(lines), width), dtype=np.uint8)
    slow = np.flatnonzero(~is_canonical)
    if fast.size:
        chars = np.frombuffer(b"".join(lines[i] for i in fast), dtype=np.uint8)
        chars = chars.reshape(fast.size, canonical)
        values = chars[:, 0::2] - np.uint8(_ZERO)  # wraps around for bytes below "0"
        separators = chars[:, 1::2]
        one_blank = (separators == _SPACE) | (separators == _TAB)
        good = (values <= 1).all(axis=1) & one_blank.all(axis=1)
        out[fast] = values
        slow = np.union1d(slow, fast[~good])  # sorted: the first wrong line is named
    # Lines in another spacing (tabs, repeated spaces) are accepted; wrong ones raise.
    for index in slow.tolist():
        out[index] = _check_amat_line(path, index + 1, lines[index], width)
    return out.reshape(len(lines), side, side)


def _mat_error(path: Path, exc: BaseException) -> DataError:
    if isinstance(exc, NotImplementedError):  # scipy's answer to an HDF5 (v7.3) file
        return DataError(
            f"{path}: a MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it with "
            f"save(..., '-v7') or use the original chardata.mat from {OMNIGLOT_URL}"
        )
    return DataError(
        f"{path}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc}); "
        f"expected the Omniglot chardata.mat from {OMNIGLOT_URL}"
    )


def _omniglot_images(path: Path, name: str, array: np.ndarray) -> np.ndarray:
    """``(784, N)`` with one column-major image per column -> float32 ``(N, 28, 28)``."""
    pixels = OMNIGLOT_SIDE * OMNIGLOT_SIDE
    if array.ndim != 2 or array.shape[0] != pixels:
        hint = " (transposed?)" if array.ndim == 2 and array.shape[1] == pixels else ""
        raise DataError(
            f"{path}: variable {name!r} has shape {array.shape}{hint}; expected ({pixels}, N), "
            f"one {OMNIGLOT_SIDE}x{OMNIGLOT_SIDE} image per column"
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(f"{path}: variable {name!r} must be numeric, got dtype {array.dtype}")
    # Column n is image n flattened by MATLAB's x(:), i.e. column-major: pixel (r, c) sits
    # at r + 28 * c. A C-order reshape therefore gives (N, col, row); swap the last two axes.
    images = array.T.reshape(-1, OMNIGLOT_SIDE, OMNIGLOT_SIDE).transpose(0, 2, 1)
    return np.ascontiguousarray(images, dtype=np.float32)


def _omniglot_labels(path: Path, name: str, array: np.ndarray, n: int) -> np.ndarray:
    """One-hot ``(classes, N)`` -> int64 class indices ``(N,)``."""
    if array.ndim != 2 or array.shape[1] != n:
        raise DataError(
            f"{path}: variable {name!r} has shape {array.shape}; expected (classes, {n}), one "
            f"one-hot column per image"
        )
    if not np.issubdtype(array.dtype, np.number) or array.shape[0] == 0:
        raise DataError(f"{path}: variable {name!r} is not a numeric one-hot matrix")
    return np.argmax(array, axis=0).astype(np.int64)


def read_omniglot_mat(path: Path) -> dict[str, np.ndarray]:
    """The 28x28 Omniglot ``chardata.mat`` of the IWAE paper (Burda et al.).

    The file holds ``data`` (784, 24345) and ``testdata`` (784, 8070): one image per column,
    each flattened column-major (MATLAB order), as yburda/iwae ``datasets.py`` undoes with
    ``data.T.reshape((-1, 28, 28)).reshape((-1, 784), order='fortran')``. Returns
    ``x_train``/``x_test`` float32 ``(N, 28, 28)`` upright (row-major, as drawn) and, when
    ``target``/``testtarget`` (one-hot alphabets, 50 x N) are present, ``y_train``/``y_test``
    int64 alphabet indices.
    """
    from scipy.io import loadmat  # scipy is heavy to import; only this reader needs it
    from scipy.io.matlab import MatReadError

    try:
        variables = loadmat(str(path))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: cannot read .mat file ({type(exc).__name__}: {exc})") from None
    except (
        OSError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        EOFError,
        NotImplementedError,
        MatReadError,
        struct.error,
        zlib.error,
    ) as exc:
        raise _mat_error(path, exc) from None
    found = sorted(k for k in variables if not k.startswith("__"))
    missing = [k for k in ("data", "testdata") if k not in found]
    if missing:
        raise DataError(
            f"{path}: no variable {' or '.join(map(repr, missing))} (found: "
            f"{', '.join(found) or 'none'}); expected the Omniglot chardata.mat from "
            f"{OMNIGLOT_URL}"
        )
    result = {
        "x_train": _omniglot_images(path, "data", np.asarray(variables["data"])),
        "x_test": _omniglot_images(path, "testdata", np.asarray(variables["testdata"])),
    }
    for target, x_key, y_key in (
        ("target", "x_train", "y_train"),
        ("testtarget", "x_test", "y_test"),
    ):
        if target in variables:
            n = result[x_key].shape[0]
            result[y_key] = _omniglot_labels(path, target, np.asarray(variables[target]), n)
    return result


def _cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: uint8 ``(n, 3, 32, 32)`` images and int64 labels."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if not raw:
        raise DataError(f"{path}: empty file; download it again from {CIFAR10_URL}")
    if len(raw) % CIFAR10_RECORD:
        raise DataError(
            f"{path}: {len(raw):,} bytes is not a whole number of {CIFAR10_RECORD}-byte records "
            f"(truncated or not a CIFAR-10 binary batch); download it again from {CIFAR10_URL}"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0]
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(
            f"{path}: record {bad} has label {labels[bad]}, but CIFAR-10 labels are 0-9 "
            f"(a CIFAR-100 file, or corrupt?)"
        )
    return records[:, 1:].reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar10_bin(directory: Path) -> dict[str, np.ndarray]:
    """CIFAR-10 "binary version": ``cifar-10-batches-bin/`` or the folder holding it.

    Each ``data_batch_{1..5}.bin`` and ``test_batch.bin`` is a run of 3073-byte records: a
    label byte, then 1024 bytes each of the R, G and B planes (rows of 32 pixels). Returns
    ``x_train``/``x_test`` uint8 ``(N, 3, 32, 32)`` and ``y_train``/``y_test`` int64. A batch
    may hold fewer than the published 10,000 records.
    """
    directory = Path(directory)
    holds_batches = (directory / CIFAR10_TEST).is_file()
    if not holds_batches and (directory / CIFAR10_DIR).is_dir():
        directory = directory / CIFAR10_DIR
    if not directory.is_dir():
        raise DataError(
            f"{directory}: not a directory; expected the folder {CIFAR10_DIR}/ of the "
            f'"CIFAR-10 binary version" from {CIFAR10_URL}'
        )
    missing = [name for name in (*CIFAR10_TRAIN, CIFAR10_TEST) if not (directory / name).is_file()]
    if missing:
        hint = ""
        if (directory / "data_batch_1").exists() or (directory / "cifar-10-batches-py").exists():
            hint = " (this looks like the Python version, which is pickled, not binary)"
        elif (directory / "cifar-10-binary.tar.gz").exists():
            hint = " (extract cifar-10-binary.tar.gz first)"
        raise DataError(
            f"{directory}: missing {', '.join(missing)}{hint}; expected the "
            f'"CIFAR-10 binary version" from {CIFAR10_URL}'
        )
    train = [_cifar10_batch(directory / name) for name in CIFAR10_TRAIN]
    x_test, y_test = _cifar10_batch(directory / CIFAR10_TEST)
    return {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
    }


def to_nchw(x: np.ndarray, layout: str = "auto", source: str = "") -> tuple[np.ndarray, str]:
    """Images to ``(N, C, H, W)``; returns the array and the layout it was read as.

    ``layout`` is "nchw", "nhwc" or "auto". Auto reads a 4-D array as channels-last when its
    last axis is 1, 3 or 4 and axis 1 is not; otherwise as NCHW, which includes the
    ambiguous case where both are (e.g. ``(N, 3, 32, 3)``): pass the layout to override.
    A 3-D ``(N, H, W)`` grey array is returned unchanged as "nchw", a 2-D ``(N, D)`` one as
    "flat"; other ranks are refused.
    """
    where = source or "images"
    if layout not in LAYOUTS:
        raise DataError(
            f"{where}: unknown image layout {layout!r}; use one of {', '.join(LAYOUTS)}"
        )
    if x.ndim == 2:
        return x, "flat"
    if x.ndim == 3:
        return x, "nchw"
    if x.ndim != 4:
        raise DataError(
            f"{where}: expected images of shape (N, C, H, W), (N, H, W, C), (N, H, W) or "
            f"(N, D), got {x.shape}"
        )
    if layout == "auto":
        last_is_channels = x.shape[3] in CHANNEL_COUNTS and x.shape[1] not in CHANNEL_COUNTS
        layout = "nhwc" if last_is_channels else "nchw"
    if layout == "nhwc":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), "nhwc"
    return x, "nchw"


def sha256_file(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (works for files larger than memory)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(chunk_size):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    return digest.hexdigest()
