"""Sweeps: a TOML grid of ``vaebench run`` settings, one run folder per cell, aggregated over seeds.

Data flow: SWEEP.toml -> cells (fixed settings + one value per axis) -> an executor runs each
cell as an ordinary run in a temporary folder of its own and returns the run's files -> the
driver writes them into ``OUT/cells/<cell>/`` and marks the cell done -> ``sweep.csv`` (a row
per cell and model) and ``summary.csv`` (mean, std and count over seeds for every metric).
Workers never see the sweep folder, so a Ray cluster needs no shared filesystem.

A cell is complete when its ``done.json`` exists with status ``ok`` or ``diverged``; ``--resume``
skips those and re-runs the rest (never started, interrupted, or ``error``), so an interrupted
sweep loses nothing and repeats nothing that had finished.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vaebench.config import RunConfig, checked, key_aliases, sweep_keys
from vaebench.errors import ConfigError, VaebenchError
from vaebench.io import atomic_write_bytes, atomic_write_text, read_json, read_rows, write_json
from vaebench.registry import Registry
from vaebench.resolve import default_out_dir, resolve_config
from vaebench.seeds import summarize

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CELL_FILE = "cell.json"
DONE_FILE = "done.json"
COMPLETE = ("ok", "diverged")


@dataclass(frozen=True)
class Cell:
    """One grid point: its id, the axis values that define it and the full run settings."""

    cell_id: str
    axes: dict[str, Any]
    settings: dict[str, Any]

    def folder(self, out: Path) -> Path:
        return out / "cells" / self.cell_id


@dataclass
class SweepSpec:
    source: str
    fixed: dict[str, Any]
    axes: dict[str, list[Any]]


def load_sweep(path: Path) -> SweepSpec:
    """Parse and check a sweep file: ``[fixed]`` settings and ``[axes]`` lists to cross."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid TOML file ({exc})") from None
    unknown = set(data) - {"fixed", "axes"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {sorted(unknown)}; a sweep file has [fixed] and [axes]"
        )
    for table in ("fixed", "axes"):
        if not isinstance(data.get(table, {}), dict):
            raise ConfigError(f"{path}: [{table}] must be a table of settings")
    fixed = checked(data.get("fixed", {}), str(path))  # typed and bounded like the flags
    axes: dict[str, list[Any]] = {}
    aliases = key_aliases()
    for key, values in data.get("axes", {}).items():
        alias = aliases.get(key.replace("-", "_"))
        name = alias[0] if alias else sweep_keys().get(key.replace("-", "_"))
        if name is None:
            checked({key: None}, str(path))  # raises: unknown setting
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: axis '{key}' must be a non-empty list, got {values!r}")
        if (alias[1] in fixed.get(name, {})) if alias else name in fixed:
            raise ConfigError(f"{path}: '{key}' is both fixed and an axis")
        if alias:  # an option of a KEY=VALUE field (beta: -M beta=...): the axis keeps its name
            axes[alias[1]] = [checked({key: v}, str(path))[name][alias[1]] for v in values]
        else:
            axes[name] = [checked({key: v}, str(path))[name] for v in values]
    return SweepSpec(str(path), fixed, axes)


def _slug(value: Any) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9.,=-]+", "_", text)[:40]


def expand(spec: SweepSpec, registry: Registry) -> list[Cell]:
    """Every combination of the axes, each checked like a ``vaebench run`` before anything runs."""
    names = list(spec.axes)
    cells = []
    for index, combo in enumerate(itertools.product(*(spec.axes[n] for n in names))):
        axes = dict(zip(names, combo, strict=True))
        settings = checked({**spec.fixed, **axes}, spec.source)
        try:
            resolve_config(RunConfig(**settings, given=sorted(settings)), registry)
        except ConfigError as exc:
            raise ConfigError(f"{spec.source}: cell {index} ({axes}): {exc}") from None
        slug = "_".join(f"{n}={_slug(v)}" for n, v in axes.items()) or "single"
        cells.append(Cell(f"{index:04d}-{slug}", axes, settings))
    return cells


def cell_status(cell: Cell, out: Path) -> str | None:
    done = cell.folder(out) / DONE_FILE
    if not done.is_file():
        return None
    try:
        return str(json.loads(done.read_text())["status"])
    except (OSError, ValueError, KeyError):
        return None


def run_cell(cell_id: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Run one cell (called by executor workers, anywhere) in a temporary folder of its own;
    return its status and every file of its run (relative path -> bytes) for the driver.

    The worker writes nothing outside that temporary folder, which it removes.
    """
    from vaebench.present.report import Reporting
    from vaebench.registry import load_registry
    from vaebench.runner import run

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vaebench-cell-") as tmp:
        run_dir = Path(tmp) / "run"
        try:
            registry = load_registry()
            config = RunConfig.from_mapping(settings, f"cell {cell_id}")
            config = resolve_config(
                dataclasses.replace(config, out=str(run_dir), quiet=True), registry
            )
            rows = run(config, registry, Reporting())
            status = "ok" if all(r["status"] == "ok" for r in rows) else "diverged"
        except Exception as exc:  # a failing cell is recorded; the sweep goes on
            status = f"error: {type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        files = {
            path.relative_to(tmp).as_posix(): path.read_bytes()
            for path in sorted(Path(tmp).rglob("*"))
            if path.is_file()
        }
    return {
        "cell_id": cell_id,
        "status": status,
        "seconds": time.perf_counter() - started,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "files": files,
    }


def start_cell(cell: Cell, out: Path) -> Path:
    """A clean cell folder holding only its ``cell.json`` (leftovers of an interrupted
    attempt go); the driver writes it when the cell starts and again when it stores it."""
    folder = cell.folder(out)
    if folder.exists():
        shutil.rmtree(folder)
    write_json(folder / CELL_FILE, {"cell_id": cell.cell_id, "settings": cell.settings})
    return folder


def store_cell(cell: Cell, out: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Write what a worker returned into the cell's folder (each file atomically, the done
    mark last, so an interrupted store is simply re-run by ``--resume``); returns the result
    without its files. Paths that would leave the cell folder are refused."""
    folder = start_cell(cell, out)
    files = result.pop("files", None) or {}
    for name, data in files.items():
        target = (folder / name).resolve()
        if not isinstance(data, bytes) or folder.resolve() not in target.parents:
            raise VaebenchError(f"cell {cell.cell_id}: refused file {name!r} from the worker")
        atomic_write_bytes(target, data)
    write_json(folder / DONE_FILE, result)
    return result


def prepare_out(out: Path, cells: list[Cell], spec: SweepSpec, resume: bool) -> None:
    plan = {
        "source": spec.source,
        "fixed": spec.fixed,
        "axes": spec.axes,
        "cells": [c.cell_id for c in cells],
    }
    plan_path = out / "sweep.json"
    if plan_path.is_file():
        if not resume:
            raise ConfigError(
                f"{out} already holds a sweep; add --resume to continue it, or choose a new --out"
            )
        previous = read_json(plan_path)
        if (
            not isinstance(previous, dict)
            or previous.get("cells") != plan["cells"]
            or previous.get("fixed") != json.loads(json.dumps(spec.fixed))
        ):
            raise ConfigError(
                f"{out}: the sweep file changed since this sweep started; use a new --out"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise ConfigError(
            f"--out {out}: holds other files and no sweep; choose a new or empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(plan_path, plan)


def run_sweep(
    spec: SweepSpec,
    cells: list[Cell],
    out: Path,
    executor_factory: Callable[[], Any],
    *,
    resume: bool = False,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the cells not yet complete, then aggregate everything in ``out``.

    The executor is made first, so a missing engine (Ray not installed) fails before the
    sweep folder is touched.
    """
    pending = [c for c in cells if not (resume and cell_status(c, out) in COMPLETE)]
    executor = executor_factory() if pending else None
    if executor is None:
        prepare_out(out, cells, spec, resume)
        return aggregate(out, cells)
    with executor:
        prepare_out(out, cells, spec, resume)
        try:
            futures = {}
            for cell in pending:  # the driver marks each cell started; a worker never writes here
                start_cell(cell, out)
                futures[executor.submit(run_cell, cell.cell_id, cell.settings)] = cell
            for future in as_completed(futures):
                cell = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # the worker itself died
                    result = {
                        "cell_id": cell.cell_id,
                        "status": f"error: worker failed: {type(exc).__name__}: {exc}",
                    }
                result = store_cell(cell, out, result)
                if on_done is not None:
                    on_done(result)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the running cells, keep the rest
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            frames = aggregate(out, cells)  # also after an interruption: what finished counts
    return frames


def _axis_value(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, list) else value


def _cell_rows(cell: Cell, out: Path) -> list[dict[str, Any]]:
    status = cell_status(cell, out) or "not run"
    base = {
        "cell_id": cell.cell_id,
        "cell_status": status,
        **{f"axis.{k}": _axis_value(v) for k, v in cell.axes.items()},
    }
    results = cell.folder(out) / "run" / "results.json"
    if status in COMPLETE and results.is_file():
        try:
            rows = read_rows(results)
        except VaebenchError as exc:  # a damaged cell is reported, never fatal to the sweep
            return [{**base, "cell_status": f"error: {exc}", "status": "unreadable"}]
        return [{**base, **row} for row in rows]
    return [{**base, "status": status}]


def aggregate(out: Path, cells: Iterable[Cell]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``sweep.csv``: a row per cell and model; ``summary.csv``: mean, std, count over seeds."""
    cells = list(cells)
    sweep = pd.DataFrame([row for cell in cells for row in _cell_rows(cell, out)])
    sweep = sweep.drop(columns=[c for c in ("kl_per_dim",) if c in sweep])
    atomic_write_text(out / "sweep.csv", sweep.to_csv(index=False))
    summary = summarize(sweep)
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    return sweep, summary


def default_sweep_out() -> Path:
    return default_out_dir(Path("sweeps"))
