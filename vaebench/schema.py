"""Every result column, declared once: key, header, unit, format, direction, group, meaning.

The CSV/JSON column order, the terminal tables, the report's tables and best-value
highlighting, the sweep aggregation and ``vaebench compare`` all read ``COLUMNS``; the README's
column table is generated from it (``python -m vaebench.docs``). A key holding ``{backend}``
declares a family of columns, one per kernel backend a run timed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MISSING = "–"  # how an absent value reads in every table
IDENTITY = ("model", "plugin", "prior")  # what one row is; runs are joined on it
GROUPS = ("identity", "setting", "status", "quality", "samples", "throughput", "detail")
METRIC_GROUPS = ("quality", "samples", "throughput")  # aggregated over seeds, compared, tabled


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    group: str
    meaning: str
    unit: str = ""
    fmt: str = ""  # format spec of a value; "" prints it as text
    better: str | None = None  # "lower" or "higher" is better; None: neither
    headline: bool = False  # shown in compact summaries (sweep report)
    spread: str | None = None  # key of the column holding this figure's IQR / median

    @property
    def title(self) -> str:
        """The header with its unit, as tables show it."""
        return (
            self.header
            if not self.unit or self.unit in self.header
            else f"{self.header} ({self.unit})"
        )

    def format(self, value: Any) -> str:
        if is_missing(value):
            return MISSING
        try:
            return format(value, self.fmt) if self.fmt else str(value)
        except (TypeError, ValueError):
            return str(value)

    @property
    def template(self) -> re.Pattern[str] | None:
        if "{" not in self.key:
            return None
        return re.compile(re.sub(r"\\\{\w+\\\}", r"(\\w+)", re.escape(self.key)) + "$")

    def expand(self, keys: Iterable[str]) -> list[Column]:
        """This column, or one concrete column per key matching its template."""
        pattern = self.template
        if pattern is None:
            return [self]
        found = []
        for key in keys:
            match = pattern.match(key)
            if match:
                name = match.group(1)
                found.append(
                    Column(
                        key,
                        self.header.format(backend=name),
                        self.group,
                        self.meaning,
                        self.unit,
                        self.fmt,
                        self.better,
                        self.headline,
                        self.spread.format(backend=name) if self.spread else None,
                    )
                )
        return sorted(found, key=lambda c: c.key)


def _c(key: str, header: str, group: str, meaning: str, **kw: Any) -> Column:
    return Column(key, header, group, meaning, **kw)


NATS = {"unit": "nats", "fmt": ".2f", "better": "lower"}
RATE = {"unit": "samples/s", "fmt": ",.0f", "better": "higher"}

COLUMNS: tuple[Column, ...] = (
    _c("model", "model", "identity", "training objective (--model)"),
    _c("plugin", "plugin", "identity", "encoder/decoder family (--plugins)"),
    _c("prior", "prior", "identity", "prior p(z) (--prior); `normal` for the AE family"),
    _c("status", "status", "status", "`ok`, `diverged at step N` or `failed: <error>`"),
    _c("dataset", "dataset", "setting", "dataset name or file"),
    _c("likelihood", "likelihood", "setting", "observation model p(x|z)"),
    _c("family", "family", "setting", "`vae` (ELBO metrics apply) or `ae`"),
    _c("latent_dim", "latent", "setting", "latent dimensions"),
    _c("epochs", "epochs", "setting", "training epochs"),
    _c("batch_size", "batch", "setting", "training batch size"),
    _c("lr", "lr", "setting", "Adam learning rate"),
    _c("seed", "seed", "setting", "random seed"),
    _c("device", "device", "setting", "`cpu` or `cuda`"),
    _c("kernel_backend", "kernel", "setting", "reparameterization + KL backend in use"),
    _c("iw_samples", "K", "setting", "importance samples K of `iw_nll`"),
    _c("n_train", "train examples", "setting", "training-split size"),
    _c("n_test", "test examples", "setting", "test-split size (every metric reads this split)"),
    _c("parameters", "parameters", "setting", "trainable and buffer parameters", fmt=",d"),
    _c("timing_batch_size", "timing batch", "setting", "examples per timed call"),
    _c("neg_elbo", "-ELBO", "quality", "negative ELBO, recon_nll + kl", **NATS, headline=True),
    _c("recon_nll", "recon", "quality", "E_q[-log p(x|z)], one sample", **NATS, headline=True),
    _c(
        "kl",
        "KL",
        "quality",
        "KL(q(z|x) || p(z)), closed form for `normal`",
        unit="nats",
        fmt=".2f",
    ),
    _c(
        "iw_nll",
        "IW-NLL",
        "quality",
        "importance-weighted NLL bound with K = iw_samples",
        **NATS,
        headline=True,
    ),
    _c("elbo_gap", "gap", "quality", "neg_elbo - iw_nll", unit="nats", fmt=".2f"),
    _c("active_units", "AU", "quality", "units with Var_x(E_q[z_j]) > 0.01", fmt=".0f"),
    _c(
        "probe_accuracy",
        "probe acc",
        "quality",
        "linear probe on posterior means (labelled data only)",
        fmt=".3f",
        better="higher",
        headline=True,
    ),
    _c(
        "neg_elbo_untrained",
        "untrained -ELBO",
        "quality",
        "-ELBO before the first step (VAE family)",
        unit="nats",
        fmt=".2f",
    ),
    _c(
        "recon_nll_untrained",
        "untrained recon",
        "quality",
        "reconstruction NLL before the first step (AE family)",
        unit="nats",
        fmt=".2f",
    ),
    _c(
        "sample_fd",
        "sample FD",
        "samples",
        "Frechet distance of classifier features, test images vs decoded prior samples",
        fmt=".2f",
        better="lower",
        headline=True,
    ),
    _c(
        "sample_confidence",
        "sample conf",
        "samples",
        "classifier's mean top-class probability on prior samples",
        fmt=".3f",
        better="higher",
    ),
    _c(
        "latent_mmd",
        "latent MMD",
        "samples",
        "MMD^2 between aggregate posterior and prior",
        fmt=".4f",
        better="lower",
        headline=True,
    ),
    _c(
        "interp_path_ratio",
        "interp path",
        "samples",
        "decoded path length over end-to-end distance",
        fmt=".3f",
        better="lower",
    ),
    _c(
        "interp_max_jump",
        "interp jump",
        "samples",
        "largest step's share of the decoded path",
        fmt=".3f",
        better="lower",
    ),
    _c(
        "classifier_test_accuracy",
        "classifier acc",
        "samples",
        "test accuracy of the feature classifier",
        fmt=".3f",
    ),
    _c(
        "train_samples_per_s",
        "train samples/s",
        "throughput",
        "training step (forward, backward, Adam)",
        **RATE,
        headline=True,
        spread="train_spread",
    ),
    _c(
        "encode_samples_per_s",
        "encode samples/s",
        "throughput",
        "encoder forward",
        **RATE,
        spread="encode_spread",
    ),
    _c(
        "decode_samples_per_s",
        "decode samples/s",
        "throughput",
        "decoder forward",
        **RATE,
        spread="decode_spread",
    ),
    _c(
        "reparam_kl_{backend}_samples_per_s",
        "reparam+KL {backend} samples/s",
        "throughput",
        "`reparameterize_kl` forward + backward alone, per timed backend",
        **RATE,
        spread="reparam_kl_{backend}_spread",
    ),
    _c(
        "train_seconds",
        "train time",
        "throughput",
        "wall time of training",
        unit="s",
        fmt=".1f",
        better="lower",
    ),
    _c(
        "kl_per_dim",
        "KL per dim",
        "detail",
        "closed-form KL per latent unit (JSON list in the CSV)",
    ),
    _c("train_spread", "train IQR", "detail", "IQR / median of the train figure", fmt=".1%"),
    _c("encode_spread", "encode IQR", "detail", "IQR / median of the encode figure", fmt=".1%"),
    _c("decode_spread", "decode IQR", "detail", "IQR / median of the decode figure", fmt=".1%"),
    _c(
        "reparam_kl_{backend}_spread",
        "reparam+KL {backend} IQR",
        "detail",
        "its IQR / median",
        fmt=".1%",
    ),
    _c("train_timed_runs", "train runs", "detail", "timed blocks behind the train figure"),
    _c("encode_timed_runs", "encode runs", "detail", "timed blocks behind the encode figure"),
    _c("decode_timed_runs", "decode runs", "detail", "timed blocks behind the decode figure"),
    _c("checkpoint", "checkpoint", "detail", "checkpoint file, relative to the run folder"),
)


def is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def column(key: str) -> Column | None:
    """The declaration of ``key`` (templates included), or None when it is not declared."""
    for declared in COLUMNS:
        if declared.key == key or (declared.template and declared.template.match(key)):
            return declared.expand([key])[0] if declared.template else declared
    return None


def ordered_keys(keys: Iterable[str]) -> list[str]:
    """Declaration order for declared keys, then the rest in their own order."""
    keys = list(dict.fromkeys(keys))
    ordered = [c.key for declared in COLUMNS for c in declared.expand(keys) if c.key in keys]
    return ordered + [k for k in keys if k not in ordered]


def columns_of(group: str, keys: Iterable[str], *, present_only: bool = True) -> list[Column]:
    """The columns of ``group`` in declaration order, templates expanded over ``keys``."""
    keys = list(keys)
    chosen = [c for declared in COLUMNS if declared.group == group for c in declared.expand(keys)]
    return [c for c in chosen if c.key in keys] if present_only else chosen


def metric_columns(keys: Iterable[str] | None = None) -> list[Column]:
    """Numeric figures worth a mean over seeds: every quality, samples and throughput column."""
    keys = list(keys) if keys is not None else None
    found = []
    for group in METRIC_GROUPS:
        if keys is None:
            found += [c for c in COLUMNS if c.group == group and not c.template]
        else:
            found += columns_of(group, keys)
    return found


def row_label(row: Mapping[str, Any]) -> str:
    """``model:plugin/prior``: how every table, figure and message names a row."""
    return "{}:{}/{}".format(*(row[k] for k in IDENTITY))


def row_stem(row: Mapping[str, Any]) -> str:
    """The row's label as a file name stem (checkpoints, error files)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "{}-{}__{}".format(*(row[k] for k in IDENTITY)))


def columns_markdown() -> str:
    """The README's table of result columns, generated from ``COLUMNS``."""
    lines = ["| column | group | unit | better | meaning |", "| --- | --- | --- | --- | --- |"]
    for c in COLUMNS:
        lines.append(f"| `{c.key}` | {c.group} | {c.unit} | {c.better or ''} | {c.meaning} |")
    return "\n".join(lines)
