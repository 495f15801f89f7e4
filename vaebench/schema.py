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
from dataclasses import dataclass, replace
from typing import Any

from vaebench.config import ROW_SETTINGS, flag, meta

MISSING = "–"  # how an absent value reads in every table
# What one row is; runs are joined on it. The mode keys (precision, compile) read as their
# default in rows written before they existed, and labels name them only when not default.
IDENTITY = ("model", "plugin", "prior", "precision", "compile")
MODE_DEFAULTS = {"precision": "fp32", "compile": "none"}
# Aggregated over seeds, compared, tabled:
METRIC_GROUPS = ("quality", "samples", "throughput", "memory", "curve")


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    group: str  # identity, setting, status, quality, samples, throughput or detail
    meaning: str
    unit: str = ""
    fmt: str = ""  # format spec of a value; "" prints it as text
    better: str | None = None  # "lower" or "higher" is better; None: neither
    headline: bool = False  # shown in compact summaries (sweep report)
    spread: str | None = None  # key of the column holding this figure's IQR / median
    per_run: bool = False  # one measurement per run, copied to each row: reports show it once

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

    @property
    def placeholder(self) -> str:
        """The name in braces of a templated key: ``backend`` or ``batch``."""
        return re.search(r"\{(\w+)\}", self.key).group(1)

    def expand(self, keys: Iterable[str]) -> list[Column]:
        """This column, or one concrete column per key matching its template (batch sizes
        in numeric order)."""
        pattern = self.template
        if pattern is None:
            return [self]
        found = []
        for key in keys:
            match = pattern.match(key)
            if match:
                fill = {self.placeholder: match.group(1)}
                found.append(
                    replace(
                        self,
                        key=key,
                        header=self.header.format(**fill),
                        spread=self.spread.format(**fill) if self.spread else None,
                    )
                )
        return sorted(found, key=lambda c: _natural(c.key))


# The run options every row records: declared once, with the option (``Option.column``).
CONFIG_SETTINGS = tuple(
    Column(
        name,
        meta(name).column,
        "setting",
        f"{meta(name).help} ({'set by vaebench' if meta(name).internal else flag(name)})",
    )
    for name in ROW_SETTINGS
)

# One row per column, in CSV order; a table reads best as a table.
# fmt: off
COLUMNS: tuple[Column, ...] = (
    Column("model", "model", "identity", "training objective (--model)"),
    Column("plugin", "plugin", "identity", "encoder/decoder family (--plugins)"),
    Column("prior", "prior", "identity", "prior p(z) (--prior); `normal` for the AE family"),
    Column("precision", "precision", "identity", "`fp32`, `bf16`, `fp16` (autocast around the networks; likelihoods and metrics in fp32) or `tf32` (--precision)"),
    Column("compile", "compile", "identity", "`none` or the torch.compile mode of the training step and encode/decode (--compile)"),
    Column("status", "status", "status", "`ok`, `diverged at step N` or `failed: <error>`"),
    Column("dataset", "dataset", "setting", "dataset name, file or task"),
    Column("likelihood", "likelihood", "setting", "observation model p(x|z)"),
    Column("family", "family", "setting", "`vae` (ELBO metrics apply) or `ae`"),
    *CONFIG_SETTINGS,
    Column("layout", "layout", "setting", "how image arrays were read: `nchw` (as stored; grey images gain a channel), `nhwc` (converted) or `flat`"),
    Column("epochs_run", "epochs run", "setting", "epochs trained before stopping"),
    Column("best_epoch", "best epoch", "setting", "the epoch with the best validation figure, whose weights were evaluated"),
    Column("seed", "seed", "setting", "random seed"),
    Column("kernel_backend", "kernel", "setting", "reparameterization + KL backend in use"),
    Column("cuda_graphs", "CUDA graphs", "setting", "training steps captured in a CUDA graph and replayed (--cuda-graphs)"),
    Column("n_train", "train examples", "setting", "training-split size"),
    Column("n_valid", "valid examples", "setting", "validation-split size (early stopping and the best epoch read it, nothing else)"),
    Column("n_test", "test examples", "setting", "test-split size (every quality metric reads this split)"),
    Column("parameters", "parameters", "setting", "trainable and buffer parameters", fmt=",d"),
    Column("timing_batch_size", "timing batch", "setting", "examples per timed call"),
    Column("neg_elbo", "-ELBO", "quality", "negative ELBO, recon_nll + kl", unit="nats", fmt=".2f", better="lower", headline=True),
    Column("recon_nll", "recon", "quality", "E_q[-log p(x|z)], one sample", unit="nats", fmt=".2f", better="lower", headline=True),
    Column("kl", "KL", "quality", "KL(q(z|x) || p(z)), closed form for `normal`", unit="nats", fmt=".2f"),
    Column("iw_nll", "IW-NLL", "quality", "importance-weighted NLL bound with K = iw_samples", unit="nats", fmt=".2f", better="lower", headline=True),
    Column("bpd", "bits/dim", "quality", "iw_nll / (D ln 2), D values per example; the literature's figure for discrete likelihoods", unit="bits", fmt=".3f", better="lower", headline=True),
    Column("neg_elbo_bpd", "-ELBO bits/dim", "quality", "neg_elbo / (D ln 2)", unit="bits", fmt=".3f", better="lower"),
    Column("elbo_gap", "gap", "quality", "neg_elbo - iw_nll", unit="nats", fmt=".2f"),
    Column("active_units", "AU", "quality", "units with Var_x(E_q[z_j]) > 0.01", fmt=".0f"),
    Column("probe_accuracy", "probe acc", "quality", "linear probe on posterior means, fit on at most 10,000 training codes (labelled data only)", fmt=".3f", better="higher", headline=True),
    Column("valid_neg_elbo", "valid -ELBO", "quality", "validation -ELBO at the best epoch (VAE family)", unit="nats", fmt=".2f", better="lower"),
    Column("valid_loss", "valid loss", "quality", "validation loss at the best epoch (AE family: the objective)", unit="nats", fmt=".2f", better="lower"),
    Column("delta_iw_nll_vs_fp32_eager", "ΔIW-NLL vs fp32 eager", "quality", "iw_nll minus that of the fp32, uncompiled row of the same model and seed in this run: the quality cost of this row's precision and compilation (compiled rows draw their noise from inductor's generator, so with one seed the difference includes another noise draw; --seeds separates them)", unit="nats", fmt="+.3f"),
    Column("delta_recon_nll_vs_fp32_eager", "Δrecon vs fp32 eager", "quality", "recon_nll minus the fp32 eager row's (every family)", unit="nats", fmt="+.3f"),
    Column("neg_elbo_untrained", "untrained -ELBO", "quality", "-ELBO before the first step (VAE family)", unit="nats", fmt=".2f"),
    Column("recon_nll_untrained", "untrained recon", "quality", "reconstruction NLL before the first step (AE family)", unit="nats", fmt=".2f"),
    Column("sample_fd", "sample FD", "samples", "Frechet distance of classifier features, test images vs decoded prior samples", fmt=".2f", better="lower", headline=True),
    Column("sample_confidence", "sample conf", "samples", "classifier's mean top-class probability on prior samples", fmt=".3f", better="higher"),
    Column("latent_mmd", "latent MMD", "samples", "MMD^2 between aggregate posterior and prior", fmt=".4f", better="lower", headline=True),
    Column("interp_path_ratio", "interp path", "samples", "decoded path length over end-to-end distance", fmt=".3f", better="lower"),
    Column("interp_max_jump", "interp jump", "samples", "largest step's share of the decoded path", fmt=".3f", better="lower"),
    Column("classifier_test_accuracy", "classifier acc", "samples", "test accuracy of the feature classifier", fmt=".3f"),
    Column("train_samples_per_s", "train samples/s", "throughput", "training step (forward, backward, Adam)", unit="samples/s", fmt=",.0f", better="higher", headline=True, spread="train_spread"),
    Column("encode_samples_per_s", "encode samples/s", "throughput", "encoder forward", unit="samples/s", fmt=",.0f", better="higher", spread="encode_spread"),
    Column("decode_samples_per_s", "decode samples/s", "throughput", "decoder forward", unit="samples/s", fmt=",.0f", better="higher", spread="decode_spread"),
    Column("reparam_kl_{backend}_samples_per_s", "reparam+KL {backend} samples/s", "throughput", "`reparameterize_kl` forward + backward alone, per timed backend", unit="samples/s", fmt=",.0f", better="higher", spread="reparam_kl_{backend}_spread", per_run=True),
    Column("train_seconds", "train time", "throughput", "wall time of the training steps, validation and compiling excluded", unit="s", fmt=".1f", better="lower"),
    Column("valid_seconds", "validation time", "throughput", "wall time of the per-epoch validation passes (not in train time)", unit="s", fmt=".1f", better="lower"),
    Column("compile_seconds", "compile time", "throughput", "wall time of the first (compiling) calls: the training step at the full and last batch shapes, and train/encode/decode at each timing batch", unit="s", fmt=".1f", better="lower"),
    Column("train_device_busy", "device busy", "throughput", "CUDA: the training step's kernel time over its wall time (well below 1: launch-bound, graphs would pay); empty on the CPU", fmt=".0%"),
    Column("train_peak_mb", "train peak", "memory", "peak tensor memory of one training step above what was live before it (CUDA: max_memory_allocated; CPU: the profiler's allocation events)", unit="MiB", fmt=",.1f", better="lower"),
    Column("encode_peak_mb", "encode peak", "memory", "the same for one encoder call", unit="MiB", fmt=",.1f", better="lower"),
    Column("decode_peak_mb", "decode peak", "memory", "the same for one decoder call", unit="MiB", fmt=",.1f", better="lower"),
    Column("eval_peak_mb", "eval peak", "memory", "the same for the whole test-split evaluation (IW-NLL included)", unit="MiB", fmt=",.1f", better="lower"),
    Column("timing_out_of_memory", "out of memory at", "detail", "--timing-batch-sizes batches that did not fit in memory (their figures are empty)"),
    Column("best_train_batch_size", "best train batch", "curve", "the timed batch size with the highest training throughput (--timing-batch-sizes)"),
    Column("train_samples_per_s_at_{batch}", "train samples/s @{batch}", "curve", "training-step throughput at each --timing-batch-sizes batch (examples cycled when the split is smaller)", unit="samples/s", fmt=",.0f", better="higher"),
    Column("encode_samples_per_s_at_{batch}", "encode samples/s @{batch}", "curve", "encoder throughput at each timed batch", unit="samples/s", fmt=",.0f", better="higher"),
    Column("decode_samples_per_s_at_{batch}", "decode samples/s @{batch}", "curve", "decoder throughput at each timed batch", unit="samples/s", fmt=",.0f", better="higher"),
    Column("train_peak_mb_at_{batch}", "train peak @{batch}", "curve", "training-step peak memory at each timed batch", unit="MiB", fmt=",.1f", better="lower"),
    Column("encode_peak_mb_at_{batch}", "encode peak @{batch}", "curve", "encoder peak memory at each timed batch", unit="MiB", fmt=",.1f", better="lower"),
    Column("decode_peak_mb_at_{batch}", "decode peak @{batch}", "curve", "decoder peak memory at each timed batch", unit="MiB", fmt=",.1f", better="lower"),
    Column("kl_per_dim", "KL per dim", "detail", "closed-form KL per latent unit (JSON list in the CSV)"),
    Column("train_spread", "train IQR", "detail", "IQR / median of the train figure", fmt=".1%"),
    Column("encode_spread", "encode IQR", "detail", "IQR / median of the encode figure", fmt=".1%"),
    Column("decode_spread", "decode IQR", "detail", "IQR / median of the decode figure", fmt=".1%"),
    Column("reparam_kl_{backend}_spread", "reparam+KL {backend} IQR", "detail", "its IQR / median", fmt=".1%", per_run=True),
    Column("train_timed_runs", "train runs", "detail", "timed blocks behind the train figure"),
    Column("encode_timed_runs", "encode runs", "detail", "timed blocks behind the encode figure"),
    Column("decode_timed_runs", "decode runs", "detail", "timed blocks behind the decode figure"),
    Column("checkpoint", "checkpoint", "detail", "checkpoint file, relative to the run folder"),
    Column("data_sha256", "data sha256", "detail", "digest of the data files' sha256 digests (each file's in environment.json); empty for built-in datasets"),
)
# fmt: on


# Written in every results file, present or not: every declared column but the per-backend ones.
CORE_KEYS = tuple(c.key for c in COLUMNS if not c.template)

# The model's own throughputs (train, encode, decode): what compare gates on and charts show.
SPEEDS = tuple(
    c.key for c in COLUMNS if c.group == "throughput" and c.better == "higher" and not c.template
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


def columns_of(group: str, keys: Iterable[str]) -> list[Column]:
    """The columns of ``group`` present in ``keys``, in declaration order, templates expanded."""
    keys = list(keys)
    return [c for d in COLUMNS if d.group == group for c in d.expand(keys) if c.key in keys]


def per_run_columns(keys: Iterable[str]) -> list[Column]:
    """The columns measured once per run (copied to its rows) present in ``keys``."""
    keys = list(dict.fromkeys(keys))
    return [c for d in COLUMNS if d.per_run for c in d.expand(keys) if c.key in keys]


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


def _natural(key: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def modes_of(row: Mapping[str, Any]) -> list[str]:
    """The row's non-default modes as words: ``["bf16", "compile=default"]``; [] for fp32 eager."""
    words = []
    for key, default in MODE_DEFAULTS.items():
        value = row.get(key)
        if not is_missing(value) and value != default:
            words.append(value if key == "precision" else f"{key}={value}")
    return words


def row_label(row: Mapping[str, Any], seeded: bool = False) -> str:
    """``model:plugin/prior``: how every table, figure and message names a row; a mode other
    than fp32 eager adds `` [bf16, compile=default]``; ``seeded`` adds `` seed N`` (a run
    with several seeds has a row per model and seed)."""
    label = "{}:{}/{}".format(*(row[k] for k in IDENTITY[:3]))
    modes = modes_of(row)
    if modes:
        label += f" [{', '.join(modes)}]"
    return f"{label} seed {row['seed']}" if seeded else label


def row_stem(row: Mapping[str, Any], seeded: bool = False) -> str:
    """The row's label as a file name stem (checkpoints, error files)."""
    stem = "{}-{}__{}".format(*(row[k] for k in IDENTITY[:3]))
    stem += "".join(f"__{word}" for word in modes_of(row))
    stem += f"__seed{row['seed']}" if seeded else ""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)


def with_mode_defaults(row: dict[str, Any]) -> dict[str, Any]:
    """A row from before the mode columns existed reads as fp32 eager, which it was."""
    for key, default in MODE_DEFAULTS.items():
        if is_missing(row.get(key)):
            row[key] = default
    return row


def template_members(template_key: str, keys: Iterable[str]) -> list[tuple[str, str]]:
    """(filled value, key) of each key of a declared ``{...}`` column family, in natural order:
    ``template_members("train_samples_per_s_at_{batch}", keys)`` -> [("64", ...), ("256", ...)]."""
    declared = next(c for c in COLUMNS if c.key == template_key)
    return [(declared.template.match(c.key).group(1), c.key) for c in declared.expand(keys)]


def columns_markdown() -> str:
    """The README's table of result columns, generated from ``COLUMNS``."""
    lines = ["| column | group | unit | better | meaning |", "| --- | --- | --- | --- | --- |"]
    for c in COLUMNS:
        lines.append(f"| `{c.key}` | {c.group} | {c.unit} | {c.better or ''} | {c.meaning} |")
    return "\n".join(lines)
