"""A checked ``RunConfig`` turned into what a run needs: the task applied (and its data
root), every component name and option key checked against the registry, the device and
kernel backend chosen, the modes checked against that device, and an output folder.

``config.py`` only declares and parses; this module is the one place that reaches out to
the registry, the tasks, torch and the kernels to settle a config. Everything here runs
before any file is written, so a bad setting costs nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from typing import Any

from vaebench.config import RunConfig, flag
from vaebench.errors import ConfigError
from vaebench.options import call_factory, check_option_keys, option_names
from vaebench.registry import Registry


def resolve_config(config: RunConfig, registry: Registry) -> RunConfig:
    """Check every name against the registry; apply the task; fill ``device`` and ``out``."""
    if config.task is None and config.data_root is not None:
        raise ConfigError("--data-root names where a --task finds its files; add --task NAME")
    if config.recipe is not None and config.task is None:
        raise ConfigError(
            f"--recipe {config.recipe} is one of a task's recipes; add --task NAME "
            "(vaebench tasks lists them)"
        )
    if config.task is not None:
        from vaebench.tasks import get_task

        own = config.model_options
        config = get_task(registry, config.task).apply(config)
        config = dataclasses.replace(
            config,
            data_root=str(data_root(config)),
            model_options=objective_options_in_use(config, registry, keep=own),
        )
    families = registry.families()
    for plugin in config.plugins:
        if plugin not in families:
            raise ConfigError(
                f"unknown plugin '{plugin}' (needs an encoder and a decoder of that name); "
                f"available: {', '.join(families) or 'none'}"
            )
    for kind, names in (
        ("prior", config.priors),
        ("model", config.models),
        ("tracker", config.track),
        ("optimizer", [config.optimizer]),
    ):
        for name in names:
            registry.get(kind, name)
    if config.likelihood != "auto":
        registry.get("likelihood", config.likelihood)
    if config.task is None and not is_path(config.dataset, registry):
        registry.get("dataset", config.dataset)
    check_component_options(config, registry)
    device = resolve_device(config.device)
    from vaebench.kernels import resolve_backend

    try:
        resolve_backend(config.kernel, device)
    except ValueError as exc:
        raise ConfigError(f"--kernel {config.kernel}: {exc}") from None
    check_modes(config, device)
    from vaebench.step import StepSettings

    StepSettings.of(config, registry).check(config.epochs, config.cuda_graphs)
    config = dataclasses.replace(config, warnings=contradictions(config) or None)
    return dataclasses.replace(config, device=device, out=str(config.out or default_out_dir()))


def contradictions(config: RunConfig) -> str:
    """Settings that do not stop a run but undo what one of them asks for, in one line each
    (joined by ``; ``): the run starts with them printed, and every row records them."""
    found = []
    warmup = config.model_options.get("kl_warmup")
    if isinstance(warmup, (int, float)) and warmup > config.epochs:
        found.append(
            f"-M kl_warmup={warmup:g} is longer than --epochs {config.epochs}: the model never "
            "trains on the full ELBO"
        )
    milestones = config.schedule_options.get("milestones")
    if isinstance(milestones, int):
        milestones = [milestones]
    if config.lr_schedule == "multistep" and isinstance(milestones, list):
        late = [m for m in milestones if isinstance(m, int) and m >= config.epochs]
        if late:
            found.append(
                f"-S milestones {','.join(map(str, late))} fall at or after --epochs "
                f"{config.epochs}: those rate changes never happen"
            )
    if config.patience > 0 and isinstance(warmup, (int, float)) and config.patience < warmup:
        found.append(
            f"--patience {config.patience} is shorter than -M kl_warmup={warmup:g}: the "
            "validation -ELBO rises while the KL weight grows, which can stop training early"
        )
    return "; ".join(found)


def resume_config(folder: Path, given: RunConfig) -> RunConfig:
    """The config of the run in ``folder``, to continue it (``--resume``): read from its
    ``config.json``, with its folder as ``out``. Only ``--quiet`` may be added; any other
    flag would make the resumed models differ from the finished ones."""
    from vaebench.io import read_json

    extra = [name for name in given.given if name != "quiet"]
    if extra:
        raise ConfigError(
            f"--resume continues {folder} as it was configured; drop {flag(extra[0])}"
        )
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"--resume {folder}: no config.json there; is it a vaebench run folder?")
    try:
        saved = read_json(path)
        saved = {k: v for k, v in saved.items() if k not in ("out", "overwrite", "quiet")}
        config = RunConfig(**saved, out=str(folder), quiet=given.quiet)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"--resume {folder}: its config.json is not this vaebench's ({exc}); resume it "
            "with the version that started it"
        ) from None
    return config


def check_modes(config: RunConfig, device: str) -> None:
    """Precisions, compile modes and graphs this device can run, before anything starts."""
    import torch

    from vaebench.modes import Mode

    if config.cuda_graphs and config.model_options.get("kl_warmup"):
        raise ConfigError(
            "--cuda-graphs freezes the KL weight in the captured step; drop -M kl_warmup"
        )
    for precision, compile_mode in config.modes():
        Mode(precision, compile_mode, config.cuda_graphs).check(torch.device(device))


def check_component_options(config: RunConfig, registry: Registry) -> None:
    """Every ``-D/-L/-P/-M`` key is an option of a component this run uses (a sweep checks
    each cell): a misspelled or misplaced key stops it before anything starts. Objectives are
    built once here too (they are cheap), so a bad ``-M`` value stops it as well."""
    objectives = [registry.get("model", name) for name in config.models]
    check_option_keys(objectives, config.model_options, "-M", 0)
    for objective in objectives:
        call_factory(objective, options=config.model_options, flag="-M", steps_per_epoch=1)
    priors = [registry.get("prior", name) for name in config.priors]
    check_option_keys(priors, config.prior_options, "-P", 1)
    for plugin in config.plugins:  # each family takes -A keys its encoder or decoder declares
        halves = [registry.get(kind, plugin) for kind in ("encoder", "decoder")]
        check_option_keys(halves, config.arch_options, "-A", 2)
    if config.likelihood != "auto":  # "auto" is checked once the data has chosen it
        likelihood = registry.get("likelihood", config.likelihood)
        check_option_keys([likelihood], config.likelihood_options, "-L", 1)
    if config.task is None and config.dataset in registry.names("dataset"):
        check_option_keys(
            [registry.get("dataset", config.dataset)], config.dataset_options, "-D", 0
        )


def objective_options_in_use(
    config: RunConfig, registry: Registry, keep: dict[str, Any]
) -> dict[str, Any]:
    """A task's suggested objective options (``kl_warmup``) that no objective of this run
    declares are dropped; the user's own ``-M`` keys are kept, and checked later."""
    declared: set[str] = set()
    for name in config.models:
        names = option_names(registry.get("model", name), 0)
        if names is None:
            return dict(config.model_options)
        declared.update(names)
    return {k: v for k, v in config.model_options.items() if k in keep or k in declared}


def is_path(spec: str, registry: Registry) -> bool:
    """A registered dataset name always means that dataset; anything else must look like a path."""
    if spec in registry.names("dataset"):
        return False
    if "/" in spec or Path(spec).suffix:
        return True
    raise ConfigError(
        f"unknown dataset '{spec}'; available: {', '.join(registry.names('dataset'))}; "
        f"give a file or folder as a path (./{spec})"
    )


def data_root(config: RunConfig) -> Path:
    """``--data-root``, else ``$VAEBENCH_DATA``, else the folder ``vaebench data fetch``
    fills by default (the platform's user cache)."""
    from vaebench.datafetch import data_root as root_of

    return root_of(config.data_root)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda, but this torch build sees no CUDA device "
            f"(torch {torch.__version__}); install a CUDA build of torch or use --device cpu"
        )
    return device


def default_out_dir(root: Path = Path("runs")) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = root / stamp
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = root / f"{stamp}-{suffix}"
    return candidate
