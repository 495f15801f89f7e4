"""Datasets: the in-memory container with its three splits, file loaders (.npz, MNIST IDX),
validation hold-outs, image layout and binarization.

Every problem with a file becomes a one-line ``DataError`` naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaebench.errors import DataError

SPLIT_SEED = 0
BINARIZE_SEED = 1  # validation and test splits are binarized once, with this seed
MAX_CLASSES = 65536  # labels are class indices; beyond this they are not
TEST_FRACTION = 0.2
SPLITS = ("train", "valid", "test")
BINARIZE = ("none", "static", "dynamic")


@dataclass
class Dataset:
    """Train, validation and test images as float32 ``(N, *shape)``, labels optional.

    Values lie in [0, 1] for image data, but a loader may hand over real-valued data (then
    the default likelihood is Gaussian). A loader without a validation split leaves
    ``x_valid`` empty; ``with_validation`` then holds one out of the training split. ``files``
    lists every file read, so a run can record their digests; ``layout`` says how 4-D arrays
    were read (``nchw``, ``nhwc`` converted, or ``flat``).
    """

    name: str
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    x_valid: torch.Tensor | None = None
    y_valid: torch.Tensor | None = None
    layout: str = ""
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for split in ("train", "valid", "test"):
            x = getattr(self, f"x_{split}")
            if x is None:
                continue
            least = 1 if split == "valid" else 2  # metrics compare examples; validation averages
            if x.ndim < 2 or x.shape[0] < least:
                raise DataError(
                    f"{self.name}: x_{split} must hold at least {least} examples, got shape "
                    f"{tuple(x.shape)}"
                )
            if not torch.isfinite(x).all():
                raise DataError(f"{self.name}: x_{split} contains NaN or infinite values")
            if x.shape[1:] != self.x_train.shape[1:]:
                raise DataError(
                    f"{self.name}: train and {split} examples differ in shape "
                    f"({tuple(self.x_train.shape[1:])} vs {tuple(x.shape[1:])})"
                )
            y = getattr(self, f"y_{split}")
            if y is not None and y.shape[0] != x.shape[0]:
                raise DataError(
                    f"{self.name}: y_{split} has {y.shape[0]} labels for {x.shape[0]} examples"
                )
        if not self.layout:
            self.layout = "flat" if self.x_train.ndim == 2 else "nchw"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def unit_interval(self) -> bool:
        splits = (self.x_train, self.x_valid, self.x_test)
        return bool(all((x.min() >= 0) and (x.max() <= 1) for x in splits if x is not None))

    @property
    def has_labels(self) -> bool:
        return self.y_train is not None and self.y_test is not None

    def sizes(self) -> dict[str, int]:
        """Examples per split, as the result row records them."""
        return {
            f"n_{split}": 0 if x is None else x.shape[0]
            for split, x in zip(SPLITS, (self.x_train, self.x_valid, self.x_test), strict=True)
        }


def with_validation(
    dataset: Dataset, fraction: float, *, count: int | None = None, last: bool = False
) -> Dataset:
    """``dataset`` with a validation split held out of its training split, unless it has one.

    By default a seeded shuffle picks ``fraction`` of the training examples (the same file
    always gives the same split); ``count`` fixes the number instead and ``last`` takes the
    final examples in file order (the MNIST protocol: the last 10,000 training images).
    """
    if dataset.x_valid is not None:
        return dataset
    n = dataset.x_train.shape[0]
    n_valid = count if count is not None else round(n * fraction)
    if not 1 <= n_valid <= n - 2:
        raise DataError(
            f"{dataset.name}: cannot hold out {n_valid} validation examples from {n} training "
            "examples (at least 1, leaving 2); change --valid-fraction or add x_valid to the data"
        )
    if last:
        order = torch.arange(n)
    else:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    keep, held = order[: n - n_valid], order[n - n_valid :]
    y = dataset.y_train
    return dataclasses.replace(
        dataset,
        x_train=dataset.x_train[keep],
        y_train=None if y is None else y[keep],
        x_valid=dataset.x_train[held],
        y_valid=None if y is None else y[held],
    )


def binarized(dataset: Dataset, mode: str) -> Dataset:
    """Bernoulli-sampled splits for data in [0, 1] (``--binarize``).

    ``static`` samples every split once; ``dynamic`` samples validation and test once and
    leaves training values as they are, for the training loop to sample each batch afresh
    (``sample_binary``). The fixed seed gives the same evaluation splits in every run.
    """
    if mode not in BINARIZE:
        raise DataError(f"--binarize {mode}: use one of {', '.join(BINARIZE)}")
    if mode == "none":
        return dataset
    if not dataset.unit_interval:
        raise DataError(
            f"{dataset.name}: --binarize {mode} needs data in [0, 1] (values are probabilities)"
        )
    generator = torch.Generator().manual_seed(BINARIZE_SEED)
    splits = ("valid", "test") if mode == "dynamic" else SPLITS
    changes = {
        f"x_{split}": torch.bernoulli(getattr(dataset, f"x_{split}"), generator=generator)
        for split in splits
        if getattr(dataset, f"x_{split}") is not None
    }
    return dataclasses.replace(dataset, **changes)


def sample_binary(batch: torch.Tensor) -> torch.Tensor:
    """A fresh Bernoulli sample of a batch of probabilities (dynamic binarization)."""
    return torch.bernoulli(batch)


def common_top(arrays) -> int | None:
    """The largest value over every integer image array of one dataset: all its splits are
    scaled by the same factor (a test split that happens to peak lower must not be stretched)."""
    tops = [
        int(a.max())
        for a in arrays
        if isinstance(a, np.ndarray) and a.size and np.issubdtype(a.dtype, np.integer)
    ]
    return max(tops) if tops else None


def to_images(x: np.ndarray, source: str, top: int | None = None) -> torch.Tensor:
    """Array to float32 ``(N, C, H, W)`` (or ``(N, D)`` for flat data), scaled into [0, 1].

    Integer data with values above 1 is divided by its natural maximum: 255 for 8-bit data,
    else the largest value, taken over every split of the dataset (``top``) so that all
    splits share one scale; 0/1 integer data stays binary.
    """
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{source}: images must be numeric, got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise DataError(f"{source}: images must be real numbers, got dtype {x.dtype}")
    if x.ndim >= 2 and x.size == 0 and x.shape[0] > 0:
        raise DataError(f"{source}: examples hold no values (shape {x.shape})")
    if x.ndim == 3:  # (N, H, W): grey images
        x = x[:, None, :, :]
    elif x.ndim not in (2, 4):
        raise DataError(
            f"{source}: expected images of shape (N, H, W), (N, C, H, W) or (N, D), got {x.shape}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{source}: holds no examples")
    if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
        x = x.astype(np.int64)
        if x.min() < 0:
            raise DataError(f"{source}: integer images must be non-negative, found {x.min()}")
        top = max(int(x.max()), top or 0)
        scale = 255.0 if 1 < top <= 255 else float(max(top, 1))
        out = x.astype(np.float32) / scale
    else:
        if not np.isfinite(x).all():
            raise DataError(f"{source}: contains NaN or infinite values")
        with np.errstate(over="ignore"):  # overflow is detected just below, with a message
            out = x.astype(np.float32)
        if not np.isfinite(out).all():
            raise DataError(
                f"{source}: values beyond the float32 range (largest magnitude {np.abs(x).max():.3g})"
            )
    return torch.from_numpy(np.ascontiguousarray(out))


def to_labels(y: np.ndarray | None, n: int, source: str) -> torch.Tensor | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{source}: expected {n} labels in a 1-D array, got shape {y.shape}")
    is_whole = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating)
        and bool(np.isfinite(y).all())
        and bool(np.all(np.mod(y, 1) == 0))
    )
    if not is_whole:
        raise DataError(f"{source}: labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= MAX_CLASSES):
        raise DataError(
            f"{source}: labels must lie in [0, {MAX_CLASSES}), found {y.min()} to {y.max()}"
        )
    return torch.from_numpy(y.astype(np.int64))


def deterministic_split(
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    test_fraction: float = TEST_FRACTION,
    seed: int = SPLIT_SEED,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Shuffle with a fixed generator and cut: the same file always gives the same split."""
    n = x.shape[0]
    if n < 2:
        raise DataError(f"need at least 2 examples to split into train and test, got {n}")
    n_test = min(max(1, round(n * test_fraction)), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test, train = order[:n_test], order[n_test:]
    return (
        x[train],
        x[test],
        None if y is None else y[train],
        None if y is None else y[test],
    )


def check_npz_headers(path: Path) -> None:
    """Read each member's .npy header before any array: a header that declares more bytes
    than the member holds (or Python objects) is refused without allocating anything."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                major, _ = np.lib.format.read_magic(member)
                read = (
                    np.lib.format.read_array_header_1_0
                    if major == 1
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read(member)
            if dtype.hasobject:
                raise DataError(f"{path}[{info.filename}]: holds Python objects, not numbers")
            declared = math.prod(shape) * dtype.itemsize
            if declared > info.file_size:
                raise DataError(
                    f"{path}[{info.filename}]: header declares shape {shape} ({declared:,} bytes) "
                    f"but the member holds {info.file_size:,} bytes (corrupt or crafted)"
                )


def load_npz(path: Path, layout: str = "auto") -> Dataset:
    """Keras MNIST convention (``x_train``, ``x_test``, optional ``x_valid`` and ``y_*``) or a
    single ``x``/``y`` (split deterministically). 4-D arrays may be channels-last (``layout``)."""
    from vaebench.formats import to_nchw

    try:
        check_npz_headers(path)
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        NotImplementedError,  # a compression method zipfile does not implement
        RuntimeError,  # an encrypted member
    ) as exc:
        raise DataError(
            f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})"
        ) from None
    source = str(path)
    top = common_top(a for k, a in arrays.items() if k.startswith("x"))
    used = set()

    def images(key: str) -> torch.Tensor:
        x, how = to_nchw(arrays[key], layout, f"{source}[{key}]")
        used.add(how)
        return to_images(x, f"{source}[{key}]", top=top)

    def labels(key: str, x: torch.Tensor) -> torch.Tensor | None:
        return to_labels(arrays.get(key), x.shape[0], f"{source}[{key}]")

    if "x_train" in arrays or "x_test" in arrays:
        missing = [k for k in ("x_train", "x_test") if k not in arrays]
        if missing:
            raise DataError(
                f"{path}: has {'x_train' if 'x_train' in arrays else 'x_test'} but no {missing[0]}"
            )
        x = {split: images(f"x_{split}") for split in SPLITS if f"x_{split}" in arrays}
        y = {split: labels(f"y_{split}", x[split]) for split in x}
        if any(label is None for label in y.values()):  # labels only when every split has them
            y = dict.fromkeys(y)
        dataset = Dataset(
            source,
            x["train"],
            x["test"],
            y["train"],
            y["test"],
            x.get("valid"),
            y.get("valid"),
            files=(source,),
        )
    elif "x" in arrays:
        x_all = images("x")
        try:
            x_train, x_test, y_train, y_test = deterministic_split(x_all, labels("y", x_all))
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
        x_valid = images("x_valid") if "x_valid" in arrays else None
        y_valid = labels("y_valid", x_valid) if x_valid is not None else None
        if x_valid is not None and (y_valid is None) != (y_train is None):
            y_train = y_test = y_valid = None  # labels only when every split has them
        dataset = Dataset(
            source, x_train, x_test, y_train, y_test, x_valid, y_valid, files=(source,)
        )
    else:
        found = ", ".join(sorted(arrays)) or "no arrays"
        raise DataError(
            f"{path}: expected arrays x_train and x_test (or a single x), found {found}"
        )
    if len(used) > 1:
        raise DataError(f"{path}: the arrays have different layouts ({', '.join(sorted(used))})")
    return dataclasses.replace(dataset, layout=used.pop())


IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (optionally gzipped), checked against its own header."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read IDX file ({type(exc).__name__}: {exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize  # Python integers: no int64 wrap-around
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes) but the file holds "
            f"{len(raw) - header} bytes of data (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (stem, stem + ".gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    # Some mirrors use a dot before "idx" (train-images.idx3-ubyte).
    for candidate in sorted(directory.glob(stem.replace("-idx", ".idx") + "*")):
        return candidate
    return None


def load_idx_dir(directory: Path) -> Dataset:
    """A folder holding MNIST-style ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``."""
    files = {
        "x_train": _find_idx(directory, "train-images-idx3-ubyte"),
        "x_test": _find_idx(directory, "t10k-images-idx3-ubyte"),
        "y_train": _find_idx(directory, "train-labels-idx1-ubyte"),
        "y_test": _find_idx(directory, "t10k-labels-idx1-ubyte"),
    }
    for key in ("x_train", "x_test"):
        if files[key] is None:
            wanted = "train-images-idx3-ubyte" if key == "x_train" else "t10k-images-idx3-ubyte"
            raise DataError(
                f"{directory}: no {wanted}[.gz] in this directory (expected MNIST IDX files)"
            )
    raw_train, raw_test = read_idx(files["x_train"]), read_idx(files["x_test"])
    top = common_top([raw_train, raw_test])
    x_train = to_images(raw_train, str(files["x_train"]), top=top)
    x_test = to_images(raw_test, str(files["x_test"]), top=top)
    y_train = y_test = None
    if files["y_train"] is not None and files["y_test"] is not None:
        y_train = to_labels(read_idx(files["y_train"]), x_train.shape[0], str(files["y_train"]))
        y_test = to_labels(read_idx(files["y_test"]), x_test.shape[0], str(files["y_test"]))
    files = tuple(str(f) for f in files.values() if f is not None)
    return Dataset(str(directory), x_train, x_test, y_train, y_test, files=files)


FILE_OPTIONS = ("layout",)  # the -D options a data file accepts
LAYOUTS = ("auto", "nchw", "nhwc")


def load_path(spec: str, options: dict[str, object] | None = None) -> Dataset:
    """A .npz file or a folder of MNIST IDX files; ``-D layout=nhwc|nchw`` for 4-D arrays."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(FILE_OPTIONS))
    if unknown:
        raise DataError(
            f"-D {unknown[0]}: a data file accepts only {', '.join(FILE_OPTIONS)} "
            "(other options belong to named datasets)"
        )
    layout = str(options.get("layout", "auto"))
    if layout not in LAYOUTS:
        raise DataError(f"-D layout={layout}: use one of {', '.join(LAYOUTS)}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"{spec}: no such file or directory")
    if path.is_dir():
        return load_idx_dir(path)
    if path.suffix == ".npz":
        return load_npz(path, layout)
    raise DataError(
        f"{spec}: unsupported data file; use a .npz archive or a directory of MNIST IDX files"
    )
