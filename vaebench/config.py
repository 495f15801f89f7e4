"""Resolved, validated settings for ``vaebench run``: every input error is raised here."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaebench.data import looks_like_path
from vaebench.errors import ConfigError
from vaebench.kernels import BACKENDS, resolve_backend
from vaebench.registry import Registry

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class RunConfig:
    """Everything a run depends on; written verbatim to ``config.json``."""

    plugins: list[str] = field(default_factory=lambda: ["mlp"])
    priors: list[str] = field(default_factory=lambda: ["normal"])
    models: list[str] = field(default_factory=lambda: ["vae"])
    prior_options: dict[str, Any] = field(default_factory=dict)
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    beta: float = 1.0
    kl_warmup: int = 0
    corruption: float = 0.3
    sparsity: float = 0.05
    iwae_samples: int = 5
    dataset: str = "digits"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    likelihood: str = "auto"
    latent_dim: int = 16
    epochs: int = 50
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"
    kernel: str = "auto"
    iw_samples: int = 100
    timing_min_time: float = 0.3
    out: str | None = None
    quiet: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolve(self, registry: Registry) -> RunConfig:
        """Check every name against the registry and fill ``device`` and ``out``."""
        check_positive(self)
        families = registry.families()
        for plugin in self.plugins:
            if plugin not in families:
                raise ConfigError(
                    f"unknown plugin '{plugin}' (needs an encoder and a decoder of that name); "
                    f"available: {', '.join(families) or 'none'}"
                )
        for prior in self.priors:
            registry.get("prior", prior)
        for model in self.models:
            registry.get("model", model)
        if self.likelihood != "auto":
            registry.get("likelihood", self.likelihood)
        if not looks_like_path(self.dataset):
            registry.get("dataset", self.dataset)
        if self.kernel not in BACKENDS:
            raise ConfigError(
                f"unknown kernel backend '{self.kernel}'; available: {', '.join(BACKENDS)}"
            )
        device = resolve_device(self.device)
        try:
            resolve_backend(self.kernel, device)
        except ValueError as exc:
            raise ConfigError(f"--kernel {self.kernel}: {exc}") from None
        out = self.out or default_out_dir()
        return dataclasses.replace(self, device=device, out=str(out))


def check_positive(config: RunConfig) -> None:
    for name in ("latent_dim", "epochs", "batch_size", "iw_samples", "iwae_samples"):
        if getattr(config, name) < 1:
            raise ConfigError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}"
            )
    for name in ("lr", "timing_min_time"):
        if not getattr(config, name) > 0:
            raise ConfigError(
                f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)}"
            )
    if not config.plugins:
        raise ConfigError("--plugins needs at least one name")
    if not config.priors:
        raise ConfigError("--prior needs at least one name")
    if not config.models:
        raise ConfigError("--model needs at least one name")
    if not 0 <= config.corruption < 1:
        raise ConfigError(f"--corruption must be in [0, 1), got {config.corruption}")
    for name in ("beta", "sparsity", "kl_warmup"):
        if getattr(config, name) < 0:
            raise ConfigError(
                f"--{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}"
            )


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise ConfigError(f"unknown device '{device}'; available: {', '.join(DEVICES)}")
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


def parse_options(pairs: list[str], flag: str = "--dataset-option") -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict, values as int, float or string."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got '{pair}'")
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        options[key] = value
    return options
