"""Experiment trackers (MLflow, TensorBoard, or a plugin's): what a run tells them, and the
promise that a tracker never fails a run.

A run's files stay the source of truth. Trackers are told about a model only after it has
been trained, evaluated and timed, so they never sit inside a timed section; the first error
a tracker raises becomes one warning on stderr and that tracker is dropped for the rest of
the run, while the others and the run go on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaebench.errors import ConfigError, PluginError

# What to install for each built-in tracker (the extra that brings its library).
EXTRAS = {"mlflow": "vaebench[mlflow]", "tensorboard": "vaebench[tensorboard]"}


@dataclass
class ModelRecord:
    """One finished model, as a tracker sees it."""

    label: str  # ``model:plugin/prior`` (with the seed when a run has several)
    stem: str  # the label as a file-name stem
    status: str
    settings: dict[str, Any]  # the row's settings: what the model was
    metrics: dict[str, float]  # the row's finite figures: what it scored
    history: list[dict[str, float]]  # per-epoch train and validation curves
    checkpoint: Path | None = None
    views: Callable[[], Any] | None = None  # -> checkpoints.ModelViews, built on demand


@dataclass
class Trackers:
    """Every tracker a run uses, each isolated from the run and from the others."""

    active: dict[str, Any] = field(default_factory=dict)
    warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr)

    @classmethod
    def build(cls, names: list[str], registry, *, out: Path, uri: str | None) -> Trackers:
        """Each tracker constructed now, before training: a missing library is one line,
        naming what to install (exit 2), not a failure an hour later."""
        active = {}
        for name in names:
            component = registry.get("tracker", name)
            try:
                active[name] = component.factory(out=out, uri=uri)
            except ImportError as exc:
                extra = EXTRAS.get(name, f"the package that provides tracker '{name}'")
                raise ConfigError(
                    f"--track {name}: {exc.name or exc} is not installed; pip install '{extra}'"
                ) from None
            except PluginError:
                raise
            except Exception as exc:
                raise ConfigError(f"--track {name}: {type(exc).__name__}: {exc}") from None
        return cls(active)

    def _each(self, method: str, *args: Any) -> None:
        for name, tracker in list(self.active.items()):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # a tracker's failure is never the run's
                del self.active[name]
                line = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
                self.warn(
                    f"vaebench: warning: tracker '{name}' failed ({line}); it is off for the "
                    "rest of this run, whose files are complete"
                )

    def start(self, name: str, settings: Mapping[str, Any]) -> None:
        self._each("start", name, dict(settings))

    def log_model(self, record: ModelRecord) -> None:
        self._each("log_model", record)

    def finish(self, artifacts: list[Path]) -> None:
        self._each("finish", [path for path in artifacts if path.is_file()])
