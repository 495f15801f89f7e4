"""The run's data: a task's files, a file or folder given as a path, or a registered dataset,
with its three splits and binarization; and digests of the files it came from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from vaebench.config import RunConfig
from vaebench.data import Dataset, binarized, load_path, with_validation
from vaebench.errors import DataError
from vaebench.formats import sha256_file
from vaebench.options import call_factory
from vaebench.registry import Registry
from vaebench.resolve import is_path


def load_dataset(config: RunConfig, registry: Registry) -> Dataset:
    """The run's data with its three splits, binarized as asked."""
    try:
        return _load_dataset(config, registry)
    except MemoryError:
        source = f"task {config.task} in {config.data_root}" if config.task else config.dataset
        raise DataError(f"{source}: the data does not fit in memory") from None


def _load_dataset(config: RunConfig, registry: Registry) -> Dataset:
    if config.task is not None:
        from vaebench.tasks import get_task
        from vaebench.tasks.load import load_task_data

        dataset = load_task_data(get_task(registry, config.task), Path(config.data_root))
    elif is_path(config.dataset, registry):
        dataset = load_path(config.dataset, config.dataset_options)
    else:
        dataset = named_dataset(config, registry)
    dataset = with_validation(dataset, config.valid_fraction)
    return binarized(dataset, config.binarize)


def named_dataset(config: RunConfig, registry: Registry) -> Dataset:
    try:  # its option keys were checked with the config (RunConfig.check_option_keys)
        dataset = call_factory(
            registry.get("dataset", config.dataset),
            options=config.dataset_options,
            flag="-D",
            seed=config.seed,
        )
    except MemoryError:
        raise DataError(
            f"dataset '{config.dataset}' with {config.dataset_options} does not fit in memory"
        ) from None
    if not isinstance(dataset, Dataset):
        raise DataError(
            f"dataset '{config.dataset}' returned {type(dataset).__name__}, not vaebench.data.Dataset"
        )
    return dataset


def data_digests(dataset: Dataset) -> dict[str, str]:
    """sha256 of every file the data came from: two runs can be checked to have read the
    same bytes (``environment.json``; the row carries a digest of these digests)."""
    return {path: sha256_file(Path(path)) for path in dataset.files}


def combined_digest(digests: dict[str, str]) -> str:
    if not digests:
        return ""
    text = "".join(f"{Path(p).name} {d}\n" for p, d in sorted(digests.items()))
    return hashlib.sha256(text.encode()).hexdigest()
