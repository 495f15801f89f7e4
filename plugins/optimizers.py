"""Optimizers that papers used and ``torch.optim`` lacks, registered like the built-in ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class AdamNormGrad(torch.optim.Adam):
    """Adam on normalized gradients, as in the VampPrior code (Tomczak & Welling, 2018):
    before each step every parameter's gradient is divided by its own L2 norm
    (``g / (||g||_2 + norm_eps)``), so each tensor moves at a rate set by ``lr`` alone,
    whatever the scale of its gradient. Weight decay, when asked for, is added by Adam after
    the normalization, as there."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        norm_eps: float = 1e-7,
        capturable: bool = False,
    ) -> None:
        if not norm_eps > 0:
            raise ValueError(f"norm_eps must be > 0, got {norm_eps!r}")
        super().__init__(
            params,
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            capturable=capturable,
        )
        self.defaults["norm_eps"] = norm_eps  # groups added later get it too
        for group in self.param_groups:
            group.setdefault("norm_eps", norm_eps)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(torch.linalg.vector_norm(p.grad) + group["norm_eps"])
        super().step()
        return loss
