"""The run configuration, declared once: every field carries its help, type, bounds and choices.

``vaebench run``'s flags and the keys a sweep TOML accepts are generated from ``RunConfig``,
and both go through ``check``: one validation, with types, whatever the source. Adding a run
option is a field here plus the code that reads it. Nothing here imports torch, so
``vaebench --help`` starts fast.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vaebench.errors import ConfigError
from vaebench.kernels import BACKENDS

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16", "tf32")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
BINARIZE = ("none", "static", "dynamic")
SEED_LIMIT = 2**63  # torch.manual_seed takes a signed 64-bit integer
DATA_ENV = "VAEBENCH_DATA"  # where tasks find their files when --data-root is not given


@dataclass(frozen=True)
class Option:
    """How a field appears to users: help text, flag name, bounds, choices."""

    help: str
    flag: str | None = None  # the CLI name when it differs from the field name
    short: str | None = None
    low: float | None = None
    above: bool = False  # strictly above ``low``
    below: float | None = None  # strictly below
    choices: tuple[str, ...] | None = None
    sweep: bool = True  # may be set in a sweep file
    aliases: tuple[str, ...] = ()  # further sweep-file keys
    internal: bool = False  # recorded in config.json, set by vaebench itself: no flag, no key
    column: str | None = None  # the header of the result rows' setting column holding it
    keys: tuple[tuple[str, str], ...] = ()  # KEY=VALUE options that also have --KEY and a sweep key


def option(default: Any, help: str, **meta: Any) -> Any:
    spec = {"metadata": {"option": Option(help, **meta)}}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), **spec)
    return field(default=default, **spec)


@dataclass
class RunConfig:
    """Everything a run depends on; written verbatim to ``config.json``."""

    # One line per option, in --help order; a table reads best as a table.
    # fmt: off
    plugins: list[str] = option(["mlp"], "encoder/decoder families", aliases=("plugin",))
    priors: list[str] = option(["normal"], "priors: normal, mog, vamp, flow", flag="prior")
    models: list[str] = option(["vae"], "objectives: vae, iwae, ae, dae, sae; AE-family rows use N(0, I) for samples", flag="model")
    task: str | None = option(None, "a versioned benchmark task (see vaebench tasks): its data, splits and protocol; other flags override its settings and the row says so")
    recipe: str | None = option(None, "a task's recipe (see vaebench tasks): every setting that produced one of its published figures; flags override it and the row says so")
    data_root: str | None = option(None, f"folder holding the task's data files (default: ${DATA_ENV}, else the user cache folder vaebench data fetch fills)")
    dataset: str = option("digits", "a registered dataset name, or a path: a .npz file or a folder of MNIST IDX files")
    dataset_options: dict[str, Any] = option({}, "option of a named dataset, e.g. -D n_train=256; files take -D layout=nhwc or nchw", flag="dataset-option", short="-D")
    valid_fraction: float = option(0.1, "share of the training split held out for validation when the data has no validation split", low=0, above=True, below=1)
    binarize: str = option("none", "Bernoulli-sample data in [0, 1]: static (once), dynamic (each training batch afresh; validation and test once, fixed seed)", choices=BINARIZE, column="binarize")
    likelihood: str = option("auto", "observation model; auto = bernoulli for [0, 1] data, else gaussian")
    likelihood_options: dict[str, Any] = option({}, "likelihood option, e.g. -L sigma=0.1 (gaussian), -L bins=256 (categorical)", flag="likelihood-option", short="-L")
    model_options: dict[str, Any] = option({}, "option of an objective, e.g. -M beta=4 (vae), -M iwae_samples=10 (iwae); each objective declares its own (vaebench plugins)", flag="model-option", short="-M", keys=(("beta", "KL weight (vae)"), ("kl_warmup", "epochs of linear KL warm-up (vae)"), ("iwae_samples", "K of the iwae training bound"), ("corruption", "fraction of input values zeroed (dae)"), ("sparsity", "L1 weight on the code (sae)")))
    prior_options: dict[str, Any] = option({}, "prior option, e.g. -P components=10 (mog), -P pseudo_inputs=50 (vamp), -P transforms=3 (flow)", flag="prior-option", short="-P", column="prior options")
    arch_options: dict[str, Any] = option({}, "option of the encoder/decoder family, e.g. -A hidden=300,300 -A activation=tanh (mlp), -A channels=64 (conv); each family declares its own (vaebench plugins)", flag="arch-option", short="-A", column="architecture")
    latent_dim: int = option(16, "latent dimensions", low=1, column="latent")
    epochs: int = option(50, "most training epochs", low=1, column="epochs")
    patience: int = option(0, "stop after this many epochs without a better validation -ELBO (loss for the AE family); 0: train every epoch. The best epoch's weights are kept either way", low=0, column="patience")
    batch_size: int = option(64, "training batch size", low=1, column="batch")
    lr: float = option(2e-3, "learning rate of the optimizer (its first, under a schedule)", low=0, above=True, column="lr")
    optimizer: str = option("adam", "optimizer: adam, adamw, adamax, rmsprop, sgd (torch.optim), adamnormgrad, or a plugin's", column="optimizer")
    optimizer_options: dict[str, Any] = option({}, "option of the optimizer, e.g. -O betas=0.99,0.999 -O eps=1e-4 (adam), -O momentum=0.9 (sgd); the torch.optim class's own keywords", flag="optimizer-option", short="-O", column="optimizer options")
    lr_schedule: str = option("none", "learning-rate schedule, stepped once per epoch: none, multistep, exponential, cosine, plateau (torch.optim.lr_scheduler), or a plugin's", column="lr schedule")
    schedule_options: dict[str, Any] = option({}, "option of the schedule, e.g. -S milestones=200,350 -S gamma=0.5 (multistep), -S factor=0.5 (plateau); the scheduler class's own keywords", flag="schedule-option", short="-S", column="schedule options")
    grad_clip: float = option(0.0, "clip the gradients' global L2 norm to this before each optimizer step (torch.nn.utils.clip_grad_norm_; fp16: after unscaling); 0: no clipping", low=0, column="grad clip")
    seed: int = option(0, "random seed", low=0, below=SEED_LIMIT)
    seeds: list[int] = option([], "run every model once per seed (a row each; tables show mean ± std, compare tests significance); replaces --seed", aliases=("seed_list",), below=SEED_LIMIT)
    device: str = option("auto", "where to run", choices=DEVICES, column="device")
    kernel: str = option("auto", "reparameterization + KL backend", choices=BACKENDS, aliases=("kernel_backend",))
    precision: list[str] = option(["fp32"], "precisions to run each model in (a row each): fp32; bf16, fp16 (autocast, fp16 with a gradient scaler); tf32 (CUDA matmuls)", choices=PRECISIONS, aliases=("precisions",))
    compile: list[str] = option(["none"], "torch.compile modes to run each model in (a row each): the training step and the encode/decode calls; compile time is its own column", choices=COMPILE_MODES, aliases=("compile_modes",))
    cuda_graphs: bool = option(False, "capture each training step in a CUDA graph and replay it per batch (CUDA; no -M kl_warmup)")
    timing_batch_sizes: list[int] = option([], "batch sizes to time train/encode/decode at (a throughput and peak-memory curve per model); the training batch (at most 256) is always timed", low=1)
    iw_samples: int = option(100, "K of the importance-weighted NLL", low=1, column="K")
    timing_min_time: float = option(0.3, "seconds of timed repeats per throughput figure", low=0, above=True)
    track: list[str] = option([], "experiment trackers to tell about each model: mlflow, tensorboard (or a plugin's); the run's files stay the source of truth")
    tracking_uri: str | None = option(None, "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the folder ./mlruns) or TensorBoard log folder (default: OUT/tensorboard)")
    out: str | None = option(None, "output folder (default: a new runs/<timestamp>)", sweep=False)
    overwrite: bool = option(False, "replace the run already in --out (its files are deleted first)", sweep=False)
    quiet: bool = option(False, "print nothing but errors", short="-q", sweep=False)
    given: list[str] = option([], "the settings chosen by the user (flags or sweep keys), not by defaults or a task", internal=True)
    protocol: str | None = option(None, "the task and version run, and which of its protocol settings were changed", internal=True, column="protocol")
    recipe_run: str | None = option(None, "the recipe run, and which of its settings were changed", internal=True, column="recipe")
    warnings: str | None = option(None, "settings that contradict each other, found when the run was resolved", internal=True, column="warnings")
    # fmt: on

    def modes(self) -> list[tuple[str, str]]:
        """(precision, compile) of every row per model, fp32 eager first when asked for: the
        reference the others' quality is compared with."""
        combos = [(p, c) for p in self.precision for c in self.compile]
        return sorted(combos, key=lambda m: m != ("fp32", "none"))

    def seed_list(self) -> list[int]:
        """The seeds every model runs with: ``--seeds``, else ``--seed``."""
        return list(self.seeds) or [self.seed]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str) -> RunConfig:
        """A config from already-typed values (a sweep file): keys and values checked."""
        settings = checked(values, source)
        return cls(**settings, given=sorted(settings))


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
TYPES = typing.get_type_hints(RunConfig)


def meta(name: str) -> Option:
    return FIELDS[name].metadata["option"]


OPTIONS = tuple(name for name in FIELDS if not meta(name).internal)  # flags and sweep keys
ROW_SETTINGS = tuple(name for name in FIELDS if meta(name).column)  # columns of every result row


def row_settings(config: RunConfig) -> dict[str, Any]:
    """The config's values that every result row records (the fields declaring a column);
    ``KEY=VALUE`` options as one text cell, ``hidden=300,300 activation=tanh``."""
    return {name: as_cell(getattr(config, name)) for name in ROW_SETTINGS}


def as_cell(value: Any) -> Any:
    """A setting as a table cell: options as ``key=value`` text, lists comma-joined."""
    if isinstance(value, dict):
        return " ".join(f"{k}={as_cell(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def flag(name: str) -> str:
    return "--" + (meta(name).flag or name.replace("_", "-"))


def key_aliases() -> dict[str, tuple[str, str, str]]:
    """``--beta``-style flags and sweep keys: alias -> (field, option key, help), for the
    options of a ``KEY=VALUE`` field that users know by their own names."""
    return {key: (name, key, text) for name in OPTIONS for key, text in meta(name).keys}


def sweep_keys() -> dict[str, str]:
    """Every key a sweep file may use (field, flag and alias spellings) -> field name."""
    keys = {}
    for name in OPTIONS:
        if meta(name).sweep:
            for key in (name, (meta(name).flag or name), *meta(name).aliases):
                keys[key.replace("-", "_")] = name
    return keys


def checked(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Sweep-file keys to field names and values to checked values; ConfigError names the key."""
    accepted, aliases = sweep_keys(), key_aliases()
    settings: dict[str, Any] = {}
    for key, value in values.items():
        if key.replace("-", "_") in aliases:
            name, option_key, _ = aliases[key.replace("-", "_")]
            try:
                merged = check(name, {option_key: value})
            except ValueError as exc:
                raise ConfigError(f"{source}: {key}: {exc}") from None
            settings[name] = {**settings.get(name, {}), **merged}
            continue
        name = accepted.get(key.replace("-", "_"))
        if name is None:
            raise ConfigError(
                f"{source}: unknown setting '{key}'; use any vaebench run option: "
                + ", ".join(sorted(set(accepted.values())))
            )
        try:
            value = check(name, value)
        except ValueError as exc:
            raise ConfigError(f"{source}: {key}: {exc}") from None
        settings[name] = {**settings.get(name, {}), **value} if isinstance(value, dict) else value
    return settings


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"expected {'a whole number' if kind is int else 'a number'}, got {value!r}"
        )
    if kind is int and not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return kind(value)


def check(name: str, value: Any) -> Any:
    """``value`` for field ``name``, typed and within bounds; ValueError says what is wrong."""
    kind, spec = TYPES[name], meta(name)
    if kind in (int, float):
        value = _number(value, kind)
        if spec.low is not None and (value < spec.low or (spec.above and value == spec.low)):
            raise ValueError(f"must be {'>' if spec.above else '>='} {spec.low:g}, got {value!r}")
        if spec.below is not None and value >= spec.below:
            raise ValueError(f"must be < {_bound(spec.below)}, got {value!r}")
    elif kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
    elif kind == list[int]:
        empty_ok = value == [] and FIELDS[name].default_factory() == []  # "[]": the default
        value = [] if empty_ok else _whole_numbers(value, int(spec.low or 0))
        too_big = [v for v in value if spec.below is not None and v >= spec.below]
        if too_big:
            raise ValueError(f"must each be < {_bound(spec.below)}, got {too_big[0]}")
    elif kind == list[str]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ValueError(f"expected a name, a comma list or a list of names, got {value!r}")
        value = list(dict.fromkeys(v.strip() for v in items if v.strip()))
        if not value:
            raise ValueError("needs at least one name")
    elif kind == dict[str, Any]:
        if not isinstance(value, dict) or not all(_option_value(v) for v in value.values()):
            raise ValueError(f"expected a table of KEY = number, text or list, got {value!r}")
    elif not (isinstance(value, str) or (value is None and FIELDS[name].default is None)):
        raise ValueError(f"expected text, got {value!r}")
    if spec.choices is not None:
        for item in value if isinstance(value, list) else [value]:
            if item not in spec.choices:
                raise ValueError(f"'{item}' is not one of: {', '.join(spec.choices)}")
    return value


def _bound(value: float) -> str:
    """A bound as users write it: 2**63 as an integer, 0.5 as 0.5."""
    return str(int(value)) if float(value).is_integer() and abs(value) >= 1e6 else f"{value:g}"


def _option_value(value: Any) -> bool:
    """A ``KEY=VALUE`` option's value: a number, text, true/false, or a list of those."""
    scalar = (int, float, str, bool)
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, scalar) for v in value)
    return isinstance(value, scalar)


def _whole_numbers(value: Any, low: int) -> list[int]:
    """Whole numbers >= ``low`` from ``"0,1,2"`` or a list, duplicates dropped, order kept."""
    items = value.split(",") if isinstance(value, str) else value
    wanted = f"expected whole numbers >= {low}, comma-separated"
    if not isinstance(items, list):
        raise ValueError(f"{wanted}, got {value!r}")
    numbers = []
    for item in items:
        text = item.strip() if isinstance(item, str) else item
        if isinstance(text, str) and text.isdigit():
            text = int(text)
        if isinstance(text, bool) or not isinstance(text, int) or text < low:
            raise ValueError(f"{wanted}, got {item!r}")
        numbers.append(text)
    if not numbers:
        raise ValueError("needs at least one number")
    return list(dict.fromkeys(numbers))


def from_text(name: str, text: Any) -> Any:
    """A command-line string (or ``KEY=VALUE`` list) to the field's type, then ``check``."""
    kind = TYPES[name]
    if kind in (int, float):
        try:
            text = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise ValueError(f"expected {what}, got '{text}'") from None
    elif kind == dict[str, Any]:
        text = parse_pairs(text)
    return check(name, text)


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict, values as int, float or string; a comma list of
    numbers (``milestones=200,350``) as a list of them."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got '{pair}'")
        value: Any = _scalar(raw)
        if isinstance(value, str) and "," in raw:
            items = [_scalar(item.strip()) for item in raw.split(",")]
            if all(not isinstance(item, str) for item in items):
                value = items
        options[key] = value
    return options


def _scalar(raw: str) -> Any:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(raw.lower(), raw)


def add_run_flags(parser) -> None:
    """One argparse flag per option, parsed later by ``from_args`` (so errors read alike)."""
    for name in OPTIONS:
        spec, kind = meta(name), TYPES[name]
        names = [flag(name), *([spec.short] if spec.short else [])]
        shown = _default(name)
        text = f"{spec.help}; {accepts(name)}" + ("" if shown == "–" else f" (default: {shown})")
        if kind is bool:
            parser.add_argument(*names, dest=name, action="store_true", help=spec.help)
        elif kind == dict[str, Any]:
            parser.add_argument(
                *names, dest=name, action="append", default=[], metavar="KEY=VALUE", help=text
            )
        else:
            metavar = "{" + ",".join(spec.choices) + "}" if spec.choices else None
            parser.add_argument(*names, dest=name, default=None, metavar=metavar, help=text)
    for alias, (name, key, text) in key_aliases().items():
        parser.add_argument(
            "--" + alias.replace("_", "-"),
            dest=f"{name}.{key}",
            default=None,
            metavar="VALUE",
            help=f"{text}: the same as {meta(name).short} {key}=VALUE",
        )


def from_args(namespace: Any) -> RunConfig:
    """The config from ``add_run_flags``' namespace; a bad value names its flag."""
    values = {}
    for name in OPTIONS:
        raw = getattr(namespace, name)
        if raw is None or (TYPES[name] == dict[str, Any] and raw == []) or raw is False:
            continue
        try:
            values[name] = from_text(name, raw)
        except ValueError as exc:
            raise ConfigError(f"{flag(name)}: {exc}") from None
    for name, key, _ in key_aliases().values():
        raw = getattr(namespace, f"{name}.{key}", None)
        if raw is not None:
            values[name] = {**values.get(name, {}), **parse_pairs([f"{key}={raw}"])}
    return RunConfig(**values, given=sorted(values))


def accepts(name: str) -> str:
    """What a field accepts, in words: its choices, bounds or shape."""
    spec, kind = meta(name), TYPES[name]
    if spec.choices:
        return " / ".join(spec.choices) + (", comma-separated" if kind == list[str] else "")
    if kind in (int, float):
        low = "" if spec.low is None else f"{'>' if spec.above else '>='} {spec.low:g}"
        high = "" if spec.below is None else f"< {spec.below:g}"
        what = "integer" if kind is int else "number"
        return f"{what} " + ", ".join(b for b in (low, high) if b)
    return {
        list[str]: "names, comma-separated",
        list[int]: "whole numbers, comma-separated",
        dict[str, Any]: "KEY=VALUE, repeatable",
        bool: "flag",
    }.get(kind, "text")


def _default(name: str) -> str:
    f = FIELDS[name]
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is None or value is False or value in ({}, []):
        return "–"
    return ",".join(value) if isinstance(value, list) else str(value)


def options_markdown() -> str:
    """The README's table of run options, generated from the fields."""
    lines = [
        "| flag | sweep key | accepts | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in OPTIONS:
        spec = meta(name)
        flags = ", ".join(f"`{n}`" for n in (flag(name), spec.short) if n)
        key = f"`{name}`" if spec.sweep else "–"
        lines.append(f"| {flags} | {key} | {accepts(name)} | {_default(name)} | {spec.help} |")
        for alias, text in spec.keys:
            same = f"the same as `{spec.short} {alias}=VALUE`"
            lines.append(
                f"| `--{alias.replace('_', '-')}` | `{alias}` | VALUE | – | {text}: {same} |"
            )
    return "\n".join(lines)
