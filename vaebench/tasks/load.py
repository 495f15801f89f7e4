"""A task's data: its files found under the data root, read in their published format, and
split as the task says. Each reader returns a ``Dataset`` listing the files it read."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

import torch

from vaebench.data import Dataset, load_idx_dir, to_images, to_labels, with_validation
from vaebench.errors import ConfigError, DataError
from vaebench.formats import read_amat, read_cifar10_bin, read_omniglot_mat
from vaebench.tasks import Task, find_files

Reader = Callable[[Task, dict[str, Path]], Dataset]


def _files(found: dict[str, Path]) -> tuple[str, ...]:
    return tuple(str(path) for path in found.values())


def amat(task: Task, found: dict[str, Path]) -> Dataset:
    """Larochelle & Murray's text files: train, valid and test given as such."""
    x = {role: to_images(read_amat(path), str(path)) for role, path in found.items()}
    return Dataset(task.name, x["train"], x["test"], x_valid=x.get("valid"), files=_files(found))


def idx(task: Task, found: dict[str, Path]) -> Dataset:
    """MNIST-style IDX files (Fashion-MNIST uses the same names and layout)."""
    folders = {path.parent for path in found.values()}
    if len(folders) != 1:
        raise ConfigError(f"task {task.name}: its IDX files must share one folder")
    return dataclasses.replace(load_idx_dir(folders.pop()), name=task.name, files=_files(found))


def omniglot(task: Task, found: dict[str, Path]) -> Dataset:
    """The IWAE paper's 28x28 ``chardata.mat`` (images in [0, 1], alphabet labels)."""
    path = found["mat"]
    arrays = read_omniglot_mat(path)
    x_train = to_images(arrays["x_train"], f"{path}[data]")
    x_test = to_images(arrays["x_test"], f"{path}[testdata]")
    y_train = to_labels(arrays.get("y_train"), x_train.shape[0], f"{path}[target]")
    y_test = to_labels(arrays.get("y_test"), x_test.shape[0], f"{path}[testtarget]")
    return Dataset(task.name, x_train, x_test, y_train, y_test, files=_files(found))


def cifar10(task: Task, found: dict[str, Path]) -> Dataset:
    """The CIFAR-10 binary batches: 8-bit RGB planes, scaled to [0, 1] as v / 255."""
    folders = {path.parent for path in found.values()}
    if len(folders) != 1:
        raise ConfigError(f"task {task.name}: its batch files must share one folder")
    arrays = read_cifar10_bin(folders.pop())

    def images(key: str) -> torch.Tensor:  # to_images would rescale a batch whose top is < 255
        return torch.from_numpy(arrays[key].astype("float32") / 255.0)

    return Dataset(
        task.name,
        images("x_train"),
        images("x_test"),
        torch.from_numpy(arrays["y_train"]),
        torch.from_numpy(arrays["y_test"]),
        layout="nchw",
        files=_files(found),
    )


READERS: dict[str, Reader] = {"amat": amat, "idx": idx, "omniglot": omniglot, "cifar10": cifar10}


def reader(task: Task) -> Reader:
    """A built-in reader, or a plugin's ``"module:function"``."""
    if task.format in READERS:
        return READERS[task.format]
    module, sep, attr = task.format.partition(":")
    if not sep:
        raise ConfigError(
            f"task {task.name}: unknown data format '{task.format}'; use one of "
            f"{', '.join(READERS)} or a 'module:function' reader"
        )
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"task {task.name}: cannot import reader {task.format} ({exc})") from None


def load_task_data(task: Task, root: Path) -> Dataset:
    """The task's three splits from the files under ``root``."""
    dataset = reader(task)(task, find_files(task, root))
    if dataset.x_valid is None:
        if task.valid_count is None:
            raise ConfigError(f"task {task.name}: no validation file and no [data.valid_split]")
        n = dataset.x_train.shape[0]
        if n < task.valid_count + 2:
            raise DataError(
                f"task {task.name}: its training files hold {n:,} examples, too few to hold out "
                f"{task.valid_count:,} for validation and train on the rest; are the files "
                f"complete? (published at {task.published})"
            )
        dataset = with_validation(dataset, 0.0, count=task.valid_count, last=task.valid_from_end)
    return dataset
