"""Everything the project writes and reads back: atomic writes, result files, run folders,
and the environment a figure was measured in (runs and benchmarks share ``environment``).
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vaebench import allocator
from vaebench.errors import VaebenchError
from vaebench.schema import (
    CORE_KEYS,
    IDENTITY,
    metric_columns,
    ordered_keys,
    row_label,
    with_mode_defaults,
)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a temporary file in the same folder, then rename: readers never see half a file.

    The temporary file is created with mode 0o666 and the process umask applies, as for any
    ordinary write (results are for sharing); the umask is never read or changed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


RUN_FILES = ("config.json", "results.json")  # what makes a folder a run folder


def check_writable(path: Path, what: str) -> None:
    """``path`` is, or can become, a folder we may write: one line naming it when it cannot."""
    if path.exists() and not path.is_dir():
        raise VaebenchError(f"{what} {path}: is a file, not a folder; choose a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise VaebenchError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VaebenchError(f"{what} {path}: {parent} is not writable; choose another folder")


def check_new_run_dir(path: Path, *, overwrite: bool) -> None:
    """Never overwrite a finished result: a run folder is replaced only on request."""
    check_writable(path, "--out")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not any((path / name).exists() for name in RUN_FILES):
        raise VaebenchError(
            f"--out {path}: holds other files and is not a vaebench run folder; "
            "choose a new or empty folder"
        )
    if not overwrite:
        raise VaebenchError(
            f"--out {path}: already holds a run; choose a new --out, or add --overwrite to replace it"
        )


def check_output_file(path: Path, what: str) -> None:
    if path.suffix.lower() == ".md":
        raise VaebenchError(f"{what} {path}: give the HTML file; its Markdown twin goes beside it")
    if path.is_dir():
        raise VaebenchError(
            f"{what} {path}: is a folder; give a file name (e.g. {path}/report.html)"
        )
    check_writable(path.parent, what)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path: Path, payload: Any) -> None:
    """``torch.save`` with the same all-or-nothing guarantee as the result files."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(_json_safe(payload), indent=2, sort_keys=False) + "\n")


def write_results(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """``results.csv`` and ``results.json``, rewritten whole after each model finishes."""
    frame = pd.DataFrame(rows)  # every declared column, so scripts find each one in every run
    frame = frame.reindex(columns=ordered_keys([*CORE_KEYS, *frame.columns]))
    flat = frame.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    atomic_write_text(out_dir / "results.csv", flat.to_csv(index=False))
    records = [{key: row.get(key) for key in frame.columns} for row in rows]
    write_json(out_dir / "results.json", records)


@dataclass
class Run:
    name: str
    path: Path
    results: pd.DataFrame
    config: dict[str, Any]
    environment: dict[str, Any]
    history: dict[str, list[dict[str, float]]]
    task: dict[str, Any]  # the task definition a task run ran (task.json), else empty


def read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        if default is not None:
            return default
        raise VaebenchError(f"{path}: missing; is {path.parent} a vaebench run folder?")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VaebenchError(f"{path}: unreadable JSON ({exc})") from None


def _number(value: Any) -> bool:
    """A metric as written by ``write_json``: a number, null (NaN) or "inf"/"-inf"."""
    return (
        value is None
        or value in ("inf", "-inf")
        or (isinstance(value, (int, float)) and not isinstance(value, bool))
    )


def check_rows(rows: Any, path: Path) -> None:
    """``results.json`` as ``write_results`` writes it; the error names the row and field."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise VaebenchError(f"{path}: holds no result rows (expected a list of objects)")
    for index, row in enumerate(rows, start=1):
        for key in (*IDENTITY, "status"):
            if not isinstance(row.get(key), str):
                raise VaebenchError(
                    f"{path}: row {index}: '{key}' must be text, got {row.get(key)!r}"
                )
        for col in metric_columns(row):
            if not _number(row[col.key]):
                raise VaebenchError(
                    f"{path}: row {index} ({row_label(row)}): '{col.key}' must be a number, "
                    f"got {row[col.key]!r}"
                )
        kl = row.get("kl_per_dim")
        if kl is not None and not (isinstance(kl, list) and all(_number(v) for v in kl)):
            raise VaebenchError(
                f"{path}: row {index} ({row_label(row)}): 'kl_per_dim' must be a list of numbers"
            )


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A ``results.json``, checked; rows from before the mode columns read as fp32 eager."""
    rows = read_json(path)
    if isinstance(rows, list):
        rows = [with_mode_defaults(r) if isinstance(r, dict) else r for r in rows]
    check_rows(rows, path)
    return rows


def check_history(history: Any, path: Path) -> None:
    """``history.json``: label -> list of per-epoch objects of numbers."""
    if not isinstance(history, dict):
        raise VaebenchError(f"{path}: expected an object of model label -> epochs")
    for label, epochs in history.items():
        if not isinstance(epochs, list) or not all(
            isinstance(e, dict)
            and isinstance(e.get("epoch"), int)
            and all(map(_number, e.values()))
            for e in epochs
        ):
            raise VaebenchError(
                f"{path}: '{label}' must be a list of objects of numbers with an integer 'epoch'"
            )


def read_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (``config.json``, ``environment.json``)."""
    value = read_json(path, {})
    if not isinstance(value, dict):
        raise VaebenchError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def load_run(path: Path) -> Run:
    """One run folder, every file checked; a one-line error naming the file and field."""
    if not path.is_dir():
        raise VaebenchError(f"{path}: no such run folder")
    rows = read_rows(path / "results.json")
    history = read_json(path / "history.json", {})
    check_history(history, path / "history.json")
    return Run(
        name=path.resolve().name,
        path=path,
        results=pd.DataFrame(rows),
        config=read_object(path / "config.json"),
        environment=read_object(path / "environment.json"),
        history=history,
        task=read_object(path / "task.json"),
    )


def load_runs(paths: list[Path]) -> list[Run]:
    runs = [load_run(p) for p in paths]
    seen: dict[str, int] = {}
    for run in runs:  # two folders of the same name (a/run, b/run) stay distinguishable
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name} ({seen[run.name]})"
    return runs


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware, so every figure can be traced to the machine that made it."""
    import torch

    try:
        import triton

        triton_version: str | None = triton.__version__
    except Exception:
        triton_version = None
    from vaebench import __version__

    info: dict[str, Any] = {
        "vaebench": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "malloc": allocator.description(),
        "git_commit": _git_commit(),
    }
    return info
