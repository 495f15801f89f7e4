"""Versioned benchmark tasks: a protocol as data (one TOML file each), so "the static binarized
MNIST protocol" means the same files, splits, likelihood, K and stopping rule everywhere.

A task names its data files and the reader of their published format, how its validation
split is made, the run settings its protocol fixes (changing one is recorded in the row:
``static-mnist@1 (modified: epochs)``), the settings it merely suggests (architecture), and
published reference figures shown beside a run's own, labelled as literature. Built-in tasks
are the TOML files beside this module; a plugin adds its own through
``vaebench_register_tasks``. Nothing here imports torch: ``vaebench tasks`` lists them fast.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaebench.config import RunConfig, checked, flag
from vaebench.errors import ConfigError, DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).parent
METRICS = ("iw_nll", "neg_elbo", "bpd", "neg_elbo_bpd")  # columns a reference may stand beside


@dataclass(frozen=True)
class Reference:
    """A published figure: what was measured, on which model, and where it was printed."""

    model: str
    architecture: str
    metric: str  # a result column: iw_nll, neg_elbo or bpd
    value: float
    source: str
    samples: int | None = None  # K of the importance-weighted estimate, when there is one
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("model", "architecture", "source", "note"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"reference {name} must be text, got {getattr(self, name)!r}")
        if self.metric not in METRICS:
            raise ValueError(f"reference metric must be one of {', '.join(METRICS)}")
        value = self.value
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(f"reference value must be a finite number, got {value!r}")
        samples = self.samples
        if samples is not None and (
            isinstance(samples, bool) or not isinstance(samples, int) or samples < 1
        ):
            raise ValueError(f"reference samples (K) must be a whole number >= 1, got {samples!r}")

    @property
    def unit(self) -> str:
        return "bits/dim" if self.metric.endswith("bpd") else "nats"


@dataclass(frozen=True)
class Task:
    """One benchmark protocol. ``files`` maps a role (train, valid, test, ...) to a file name."""

    name: str
    version: int
    description: str
    format: str  # a reader in vaebench.tasks.formats.READERS, or "module:function"
    files: Mapping[str, str]
    published: str  # where the files can be downloaded (nothing is downloaded at run time)
    folder: str = ""  # a sub-folder of the data root that may hold the files
    valid_count: int | None = None  # validation held out of the training file(s) ...
    valid_from_end: bool = True  # ... taking the last examples in file order
    protocol: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    references: tuple[Reference, ...] = ()
    source: str = ""  # the TOML file it was read from

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def apply(self, config: RunConfig) -> RunConfig:
        """``config`` with the task's settings where the user chose none, and its protocol
        string naming every protocol setting the user changed."""
        clash = {"dataset", "dataset_options", "valid_fraction"} & set(config.given)
        if clash:
            name = sorted(clash)[0]
            raise ConfigError(f"--task {self.name} fixes its data and splits; drop {flag(name)}")
        settings = {**self.defaults, **self.protocol}
        chosen = {k: v for k, v in settings.items() if k not in config.given}
        for key, value in settings.items():  # KEY=VALUE options: the user's keys win, per key
            if key in config.given and isinstance(value, dict):
                chosen[key] = {**value, **getattr(config, key)}
        modified = [
            k
            for k in sorted(config.given)
            if (k in self.protocol and getattr(config, k) != self.protocol[k])
            or (k == "likelihood_options" and "likelihood" in self.protocol)
        ]
        protocol = self.id + (f" (modified: {', '.join(modified)})" if modified else "")
        return dataclasses.replace(config, **chosen, dataset=self.name, protocol=protocol)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _table(data: Mapping[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{key}] must be a table")
    return value


def task_from_mapping(data: Mapping[str, Any], source: str) -> Task:
    """A ``Task`` from a parsed TOML document; every problem is one line naming ``source``."""
    try:
        files = _table(data, "data", source)
        valid = _table(files, "valid_split", source)
        references = []
        for i, ref in enumerate(data.get("references", [])):
            try:
                references.append(Reference(**ref))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{source}: references[{i}]: {exc}") from None
        task = Task(
            name=str(data["name"]),
            version=int(data["version"]),
            description=str(data.get("description", "")),
            format=str(files["format"]),
            files=dict(files["files"]),
            published=str(files.get("published", "")),
            folder=str(files.get("folder", "")),
            valid_count=valid.get("count"),
            valid_from_end=valid.get("from", "end") == "end",
            protocol=checked(_table(data, "protocol", source), f"{source} [protocol]"),
            defaults=checked(_table(data, "defaults", source), f"{source} [defaults]"),
            references=tuple(references),
            source=source,
        )
    except KeyError as exc:
        raise ConfigError(f"{source}: missing {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    fixed = {"task", "data_root", "dataset", "dataset_options", "valid_fraction"}
    for key in fixed & (set(task.protocol) | set(task.defaults)):
        raise ConfigError(f"{source}: '{key}' is fixed by the task's [data] table, not a setting")
    return task


def task_from_file(path: str | Path) -> Task:
    """Read one task TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the task ({type(exc).__name__}: {exc})") from None
    return task_from_mapping(data, str(path))


def builtin_task_files() -> list[Path]:
    return sorted(HERE.glob("*.toml"))


def builtin_factories() -> dict[str, Any]:
    """name -> factory for every built-in task file (what the built-in plugin registers)."""
    return {path.stem: functools.partial(task_from_file, path) for path in builtin_task_files()}


def get_task(registry, name: str) -> Task:
    """The registered task ``name`` (or ``name@version``, as ``vaebench tasks`` lists it)."""
    base, _, version = name.partition("@")
    component = registry.get("task", base)
    task = component.factory()
    if version and version != str(task.version):
        raise ConfigError(
            f"task {base} is at version {task.version} here, not {version}; this vaebench "
            f"runs {task.id}"
        )
    if not isinstance(task, Task):
        raise ConfigError(
            f"task '{name}' from {component.owner} returned {type(task).__name__}, not a Task"
        )
    return task


def find_files(task: Task, root: Path) -> dict[str, Path]:
    """Each role's file under ``root/folder`` or ``root`` (a gzipped IDX file too);
    missing files stop the run with one line naming them and where they are published."""
    folders = [root / task.folder, root] if task.folder else [root]
    for folder in folders:
        found = {}
        for role, name in task.files.items():
            twins = (name, name + ".gz") if task.format == "idx" else (name,)
            for candidate in (folder / twin for twin in twins):
                if candidate.is_file():
                    found[role] = candidate
                    break
        if len(found) == len(task.files):
            return found
    where = " or ".join(str(f) for f in folders)
    raise DataError(
        f"task {task.name}: expected {', '.join(task.files.values())} in {where}; "
        f"download them from {task.published} (vaebench never downloads)"
    )


def references_of(task: Mapping[str, Any], source: str) -> list[Reference]:
    """The reference figures of a task definition as written to a run's ``task.json``."""
    try:
        return [Reference(**ref) for ref in task.get("references", [])]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: references: {exc}") from None


LITERATURE_HEADERS = ("", "model", "architecture", "K", "figure", "value", "source")


def literature_rows(refs: list[Reference], rows: list[Mapping[str, Any]]) -> list[list[str]]:
    """Published figures, then this run's rows on the same figures: one table, each line
    labelled ``literature`` or ``this run``, so nobody mistakes one for the other."""
    from vaebench.schema import column, row_label

    lines = []
    for ref in refs:
        note = f" ({ref.note})" if ref.note else ""
        lines.append(
            [
                "literature",
                ref.model,
                ref.architecture,
                "" if ref.samples is None else str(ref.samples),
                column(ref.metric).title,
                column(ref.metric).format(ref.value),
                ref.source + note,
            ]
        )
    for metric in dict.fromkeys(ref.metric for ref in refs):
        col = column(metric)
        for row in rows:
            if row.get("status") != "ok":
                continue
            lines.append(
                [
                    "this run",
                    row_label(row),
                    f"{row.get('plugin')}, {row.get('latent_dim')} latents",
                    str(row.get("iw_samples", "")) if metric in ("iw_nll", "bpd") else "",
                    col.title,
                    col.format(row.get(metric)),
                    str(row.get("protocol") or ""),
                ]
            )
    return lines
