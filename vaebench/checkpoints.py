"""Small per-model checkpoints: state dict, the spec to rebuild it, and a few test examples.

They let ``vaebench report`` draw reconstructions, prior samples and interpolations long
after the run. Loaded with ``weights_only=True``: a checkpoint can hold tensors and plain
containers only, never code.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch

from vaebench.errors import VaebenchError
from vaebench.model import VAE, ModelSpec
from vaebench.results import atomic_torch_save

FORMAT = 1
REPORT_EXAMPLES = 8


def checkpoint_path(out_dir: Path, plugin: str, prior: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{plugin}__{prior}")
    return out_dir / "checkpoints" / f"{safe}.pt"


def save_checkpoint(path: Path, model: VAE, spec: ModelSpec, examples: torch.Tensor) -> None:
    """Atomic like the result files: a crash never leaves a truncated checkpoint."""
    payload = {
        "format": FORMAT,
        "spec": dataclasses.asdict(spec),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "examples": examples.detach().cpu(),
    }
    atomic_torch_save(path, payload)


def load_checkpoint(path: Path) -> tuple[ModelSpec, dict[str, torch.Tensor], torch.Tensor]:
    try:
        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VaebenchError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise VaebenchError(f"{path}: not a vaebench checkpoint of format {FORMAT}")
    spec = payload["spec"]
    spec = ModelSpec(**{**spec, "input_shape": tuple(spec["input_shape"])})
    return spec, payload["state_dict"], payload["examples"]
