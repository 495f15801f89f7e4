"""Built-in experiment trackers: MLflow and TensorBoard (``vaebench run --track NAME``).

Each is built with ``factory(out=RUN_DIR, uri=--tracking-uri)`` and imports its library
there, so a missing one is reported before training. Both are told about each model once it
is finished (settings, curves, final figures, files) and never during timing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

EXPERIMENT = "vaebench"
MLFLOW_BATCH = 100  # params or metrics per log_batch call (MLflow's documented limit per kind)
MLFLOW_VALUE = 500  # characters of a param value kept (MLflow stores at most 6000)


def _text(value: Any) -> str:
    return (",".join(map(str, value)) if isinstance(value, list) else str(value))[:MLFLOW_VALUE]


def _curve_key(key: str) -> str:
    """``train/loss``, ``valid/neg_elbo``: per-epoch curves apart from the final figures,
    which keep their result-column names (``kl`` is the test KL, ``train/kl`` the curve)."""
    return key.replace("valid_", "valid/", 1) if key.startswith("valid_") else f"train/{key}"


def _curves(history: list[dict[str, float]]) -> list[tuple[str, float, int]]:
    """(key, value, epoch) for every finite per-epoch figure."""
    return [
        (_curve_key(key), float(value), int(epoch["epoch"]))
        for epoch in history
        for key, value in epoch.items()
        if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value)
    ]


class MLflowTracker:
    """One MLflow run per ``vaebench run``, one nested run per model: its settings as params,
    its per-epoch curves as metrics with steps, its final figures as metrics, its checkpoint
    as an artifact; the parent gets the run's config, result files and report.

    Where, by MLflow's own conventions: the store is ``--tracking-uri``, else
    ``MLFLOW_TRACKING_URI`` (how MLflow users point every tool at the team's server), else the
    folder ``./mlruns`` holding an SQLite database (MLflow's supported local backend; its
    plain-file store is frozen) and the artifacts. The experiment is ``MLFLOW_EXPERIMENT_NAME``,
    else ``vaebench``.
    """

    def __init__(self, out: Path, uri: str | None = None) -> None:
        import alembic  # noqa: F401
        import mlflow.tracking  # noqa: F401  (a missing library stops the run before training)
        import sqlalchemy  # noqa: F401  (the default SQLite store needs both)

        self.out = out
        self.uri = uri
        self.client: Any = None
        self.parent: str | None = None
        self.experiment: str | None = None

    def _connect(self) -> None:
        """The store is first touched here, in ``start``: an unusable one is a warning."""
        import logging
        import os

        from mlflow.tracking import MlflowClient

        # A tracking server that does not answer costs seconds, not minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        for name in ("mlflow.store.db.utils", "alembic"):  # schema set-up chatter
            logging.getLogger(name).setLevel(logging.WARNING)
        artifacts = None
        self.uri = self.uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        if self.uri is None:
            folder = Path("mlruns").resolve()
            folder.mkdir(exist_ok=True)
            self.uri = f"sqlite:///{folder / 'mlflow.db'}"
            artifacts = (folder / "artifacts").as_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        self.experiment = (
            found.experiment_id
            if found
            else self.client.create_experiment(name, artifact_location=artifacts)
        )

    def _log(self, run_id: str, params: dict[str, Any], metrics: list[tuple[str, float, int]]):
        from mlflow.entities import Metric, Param

        items = [Param(k, _text(v)) for k, v in params.items()]
        for start in range(0, len(items), MLFLOW_BATCH):
            self.client.log_batch(run_id, params=items[start : start + MLFLOW_BATCH])
        stamp = int(time.time() * 1000)
        points = [Metric(key, value, stamp, step) for key, value, step in metrics]
        for start in range(0, len(points), MLFLOW_BATCH):
            self.client.log_batch(run_id, metrics=points[start : start + MLFLOW_BATCH])

    def start(self, name: str, settings: dict[str, Any]) -> None:
        self._connect()
        run = self.client.create_run(
            self.experiment, run_name=name, tags={"vaebench.run_dir": str(self.out.resolve())}
        )
        self.parent = run.info.run_id
        self._log(self.parent, {k: v for k, v in settings.items() if v not in (None, [], {})}, [])

    def log_model(self, record) -> None:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        run = self.client.create_run(
            self.experiment,
            run_name=record.label,
            tags={MLFLOW_PARENT_RUN_ID: self.parent, "vaebench.status": record.status},
        )
        run_id = run.info.run_id
        finals = [(key, value, 0) for key, value in record.metrics.items()]
        self._log(run_id, record.settings, _curves(record.history) + finals)
        if record.checkpoint is not None and record.checkpoint.is_file():
            self.client.log_artifact(run_id, str(record.checkpoint))
        self.client.set_terminated(run_id, "FINISHED" if record.status == "ok" else "FAILED")

    def finish(self, artifacts: list[Path]) -> None:
        for path in artifacts:
            self.client.log_artifact(self.parent, str(path))
        self.client.set_terminated(self.parent, "FINISHED")


class TensorBoardTracker:
    """Event files per model under ``RUN_DIR/tensorboard/<model>`` (or ``--tracking-uri``):
    per-epoch curves as scalars, settings and final figures as hparams, and the
    reconstructions and prior samples as image grids."""

    def __init__(self, out: Path, uri: str | None = None) -> None:
        import tensorboard  # noqa: F401  (SummaryWriter needs it; fail here, not mid-run)
        from torch.utils.tensorboard import SummaryWriter

        self.writer_type = SummaryWriter
        self.root = Path(uri) if uri else out / "tensorboard"

    def start(self, name: str, settings: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def log_model(self, record) -> None:
        writer = self.writer_type(log_dir=str(self.root / record.stem))
        try:
            for key, value, step in _curves(record.history):
                writer.add_scalar(key, value, step)
            hparams = {
                k: v if isinstance(v, (int, float, str, bool)) else _text(v)
                for k, v in record.settings.items()
                if v is not None
            }
            writer.add_hparams(hparams, dict(record.metrics), run_name=".")
            views = record.views() if record.views is not None else None
            if views is not None:
                for tag, images in (
                    ("reconstructions", views.reconstructions),
                    ("prior_samples", views.samples),
                ):
                    if images.ndim == 4 and images.shape[1] in (1, 3):
                        writer.add_images(tag, images.clip(0, 1), 0, dataformats="NCHW")
        finally:
            writer.close()

    def finish(self, artifacts: list[Path]) -> None:
        pass
