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
    recipe: str = ""  # the task's recipe that reruns it (vaebench run --recipe NAME)
    reproduction: float | None = None  # a peer's own rerun of it, where published
    reproduction_source: str = ""

    def __post_init__(self) -> None:
        if self.reproduction is not None and (
            isinstance(self.reproduction, bool)
            or not isinstance(self.reproduction, (int, float))
            or not math.isfinite(self.reproduction)
        ):
            raise ValueError(f"reference reproduction must be a number, got {self.reproduction!r}")
        if (self.reproduction is None) != (not self.reproduction_source):
            raise ValueError("a reference's reproduction needs its reproduction_source, and back")
        for name in ("model", "architecture", "source", "note", "recipe", "reproduction_source"):
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
class Recipe:
    """Every setting that produced a published figure, runnable: ``--recipe NAME`` applies
    ``settings`` (run option keys, as in a sweep file) over the task's. ``unconfirmed`` lists
    what its source leaves open or vaebench cannot do alike, so a gap can be explained."""

    name: str
    description: str
    source: str
    settings: Mapping[str, Any]
    unconfirmed: tuple[str, ...] = ()


def merged(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; ``KEY=VALUE`` option tables merge key by key."""
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        out[key] = (
            {**below, **value} if isinstance(value, dict) and isinstance(below, dict) else value
        )
    return out


def changed(settings: Mapping[str, Any], config: RunConfig, keys: Any) -> list[str]:
    """The ``keys`` of ``settings`` whose value in ``config`` differs (options: per key)."""
    found = []
    for key in sorted(keys):
        value, final = settings[key], getattr(config, key)
        if isinstance(value, dict):
            if any(final.get(k) != v for k, v in value.items()):
                found.append(key)
        elif final != value:
            found.append(key)
    return found


UNPACK = ("none", "gz", "tar.gz", "zip")


@dataclass(frozen=True)
class Source:
    """One file as its publisher distributes it: where (mirrors, tried in order), its sha256
    as distributed and where that hash comes from, how it unpacks and which of the task's
    files it provides (member path in the archive -> file name; "" for a plain or .gz file).
    ``vaebench data fetch`` downloads nothing else and uses nothing that fails the hash."""

    name: str  # the download's file name
    urls: tuple[str, ...]
    sha256: str
    hash_source: str
    provides: Mapping[str, str]
    unpack: str = "none"
    size: int | None = None
    unpacked_sha256: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.urls or not all(isinstance(u, str) and "://" in u for u in self.urls):
            raise ValueError(f"source {self.name}: urls must be a non-empty list of URLs")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"source {self.name}: sha256 must be 64 lowercase hex digits")
        if self.unpack not in UNPACK:
            raise ValueError(f"source {self.name}: unpack must be one of {', '.join(UNPACK)}")
        if not self.provides:
            raise ValueError(f"source {self.name}: provides names no file")
        if self.unpack in ("none", "gz") and list(self.provides) != [""]:
            raise ValueError(f"source {self.name}: a {self.unpack} source provides one file: "
                             '{ "" = "NAME" }')  # fmt: skip
        for name in (self.name, *self.provides.values(), *self.unpacked_sha256):
            if not _plain_name(name):
                raise ValueError(f"source {self.name}: '{name}' must be a plain file name")


def _plain_name(name: str) -> bool:
    """A file name that stays in its folder: no separator, drive, or dot-only name."""
    return bool(name) and not any(c in name for c in "/\\:\0") and name not in (".", "..")


def _sources(files: Mapping[str, Any], source: str) -> tuple[Source, ...]:
    found = []
    for i, entry in enumerate(files.get("sources", [])):
        try:
            provides = entry.get("provides") or {"": entry["name"]}
            found.append(
                Source(
                    name=str(entry["name"]),
                    urls=tuple(entry["urls"]),
                    sha256=str(entry["sha256"]),
                    hash_source=str(entry["hash_source"]),
                    provides=dict(provides),
                    unpack=str(entry.get("unpack", "none")),
                    size=entry.get("size"),
                    unpacked_sha256=dict(entry.get("unpacked_sha256", {})),
                )
            )
        except KeyError as exc:
            raise ConfigError(f"{source}: data.sources[{i}]: missing {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{source}: data.sources[{i}]: {exc}") from None
    return tuple(found)


@dataclass(frozen=True)
class Task:
    """One benchmark protocol. ``files`` maps a role (train, valid, test, ...) to a file name."""

    name: str
    version: int
    description: str
    format: str  # a reader in vaebench.tasks.formats.READERS, or "module:function"
    files: Mapping[str, str]
    published: str  # where the files are published (a run never downloads; ``data fetch`` does)
    folder: str = ""  # a sub-folder of the data root that may hold the files
    sources: tuple[Source, ...] = ()  # what ``vaebench data fetch`` downloads, pinned by sha256
    valid_count: int | None = None  # validation held out of the training file(s) ...
    valid_from_end: bool = True  # ... taking the last examples in file order
    protocol: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    references: tuple[Reference, ...] = ()
    source: str = ""  # the TOML file it was read from
    recipes: Mapping[str, Recipe] = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def apply(self, config: RunConfig) -> RunConfig:
        """``config`` with the task's settings where the user chose none: its suggestions,
        then its protocol, then the recipe's (``--recipe``); the user's flags win over all.
        The protocol string names every protocol setting the run changed (by recipe or
        flag), the recipe string every recipe setting a flag changed."""
        clash = {"dataset", "dataset_options", "valid_fraction"} & set(config.given)
        if clash:
            name = sorted(clash)[0]
            raise ConfigError(f"--task {self.name} fixes its data and splits; drop {flag(name)}")
        recipe = self.recipe(config.recipe)
        settings = merged(merged(self.defaults, self.protocol), recipe.settings if recipe else {})
        chosen = {k: v for k, v in settings.items() if k not in config.given}
        for key, value in settings.items():  # KEY=VALUE options: the user's keys win, per key
            if key in config.given and isinstance(value, dict):
                chosen[key] = {**value, **getattr(config, key)}
        final = dataclasses.replace(config, **chosen)
        modified = changed(self.protocol, final, self.protocol)
        if "likelihood_options" in config.given and "likelihood" in self.protocol:
            modified = sorted({*modified, "likelihood_options"})
        protocol = self.id + (f" (modified: {', '.join(modified)})" if modified else "")
        recipe_run = None
        if recipe is not None:
            own = changed(recipe.settings, final, set(recipe.settings) & set(config.given))
            recipe_run = recipe.name + (f" (modified: {', '.join(own)})" if own else "")
        return dataclasses.replace(
            final, dataset=self.name, protocol=protocol, recipe_run=recipe_run
        )

    def recipe(self, name: str | None) -> Recipe | None:
        """The recipe ``name`` (None: none asked for); an unknown one names those there are."""
        if name is None:
            return None
        if name not in self.recipes:
            there = ", ".join(self.recipes) or "none"
            raise ConfigError(
                f"--recipe {name}: task {self.name} has no such recipe; it has {there}"
            )
        return self.recipes[name]

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
            sources=_sources(files, source),
            valid_count=valid.get("count"),
            valid_from_end=valid.get("from", "end") == "end",
            protocol=checked(_table(data, "protocol", source), f"{source} [protocol]"),
            defaults=checked(_table(data, "defaults", source), f"{source} [defaults]"),
            references=tuple(references),
            source=source,
            recipes=_recipes(data, source),
        )
    except KeyError as exc:
        raise ConfigError(f"{source}: missing {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    fixed = {"task", "data_root", "dataset", "dataset_options", "valid_fraction"}
    recipe_keys = {k for recipe in task.recipes.values() for k in recipe.settings}
    for key in fixed & (set(task.protocol) | set(task.defaults) | recipe_keys):
        raise ConfigError(f"{source}: '{key}' is fixed by the task's [data] table, not a setting")
    if ".." in Path(task.folder).parts or Path(task.folder).is_absolute():
        raise ConfigError(f"{source}: [data] folder must stay under the data root")
    provided = {name for src in task.sources for name in src.provides.values()}
    if task.sources and not set(task.files.values()) <= provided:
        missing = sorted(set(task.files.values()) - provided)
        raise ConfigError(f"{source}: data.sources provide no {', '.join(missing)}")
    for ref in task.references:
        if ref.recipe and ref.recipe not in task.recipes:
            raise ConfigError(f"{source}: a reference names recipe '{ref.recipe}', not defined")
    return task


def _recipes(data: Mapping[str, Any], source: str) -> dict[str, Recipe]:
    recipes = {}
    for name, table in _table(data, "recipes", source).items():
        where = f"{source} [recipes.{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        settings = checked(_table(table, "settings", where), f"{where} settings")
        if "recipe" in settings or "task" in settings:
            raise ConfigError(f"{where}: a recipe cannot name a task or another recipe")
        unconfirmed = table.get("unconfirmed", [])
        if not isinstance(unconfirmed, list) or not all(isinstance(u, str) for u in unconfirmed):
            raise ConfigError(f"{where}: unconfirmed must be a list of text")
        recipes[name] = Recipe(
            name,
            str(table.get("description", "")),
            str(table["source"]),
            settings,
            tuple(unconfirmed),
        )
    return recipes


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
    how = (
        f"run `vaebench data fetch {task.name}` (or add --download), or get them from "
        f"{task.published}"
        if task.sources
        else f"download them from {task.published}"
    )
    raise DataError(
        f"task {task.name}: expected {', '.join(task.files.values())} in {where}; {how}"
    )


def references_of(task: Mapping[str, Any], source: str) -> list[Reference]:
    """The reference figures of a task definition as written to a run's ``task.json``."""
    try:
        return [Reference(**ref) for ref in task.get("references", [])]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: references: {exc}") from None


LITERATURE_HEADERS = ("", "model", "architecture", "K", "figure", "value", "this run −", "source")


def recipe_name(row: Mapping[str, Any]) -> str:
    """The recipe a row ran (its ``recipe`` column without the modifications), or ""."""
    return str(row.get("recipe_run") or "").split(" ")[0]


def literature_rows(refs: list[Reference], rows: list[Mapping[str, Any]]) -> list[list[str]]:
    """Published figures, a peer's own reproduction where one is published, then this run's
    rows on the same figures: one table, each line labelled ``literature``, ``reproduction``
    or ``this run``, so nobody mistakes one for the other. When the run ran a reference's
    recipe, the reference's lines show this run's figure minus theirs."""
    from vaebench.schema import column, row_label

    ok = [row for row in rows if row.get("status") == "ok"]
    lines = []
    for ref in refs:
        col = column(ref.metric)
        mine = [r.get(ref.metric) for r in ok if ref.recipe and recipe_name(r) == ref.recipe]
        mine = [m for m in mine if isinstance(m, (int, float)) and math.isfinite(m)]

        def delta(value: float, mine: list[float] = mine) -> str:
            return f"{mine[0] - value:+.2f}" if len(mine) == 1 else ""

        note = f" ({ref.note})" if ref.note else ""
        recipe = f" [recipe {ref.recipe}]" if ref.recipe else ""
        k = "" if ref.samples is None else str(ref.samples)
        lines.append(
            ["literature", ref.model, ref.architecture, k, col.title, col.format(ref.value),
             delta(ref.value), ref.source + note + recipe]
        )  # fmt: skip
        if ref.reproduction is not None:
            lines.append(
                ["reproduction", ref.model, ref.architecture, k, col.title,
                 col.format(ref.reproduction), delta(ref.reproduction), ref.reproduction_source]
            )  # fmt: skip
    for metric in dict.fromkeys(ref.metric for ref in refs):
        col = column(metric)
        for row in ok:
            recipe = recipe_name(row)
            lines.append(
                [
                    "this run",
                    row_label(row),
                    f"{row.get('plugin')}, {row.get('latent_dim')} latents",
                    str(row.get("iw_samples", "")) if metric in ("iw_nll", "bpd") else "",
                    col.title,
                    col.format(row.get(metric)),
                    "",
                    str(row.get("protocol") or "")
                    + (f", recipe {row['recipe_run']}" if recipe else ""),
                ]
            )
    return lines
