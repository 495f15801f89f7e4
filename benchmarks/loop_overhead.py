"""What vaebench's training loop costs over a bare PyTorch loop on the same modules.

    python -m benchmarks.loop_overhead [--plugins mlp,conv] [--batch-size 128] [--epochs 3] [--repeats 5]

Both loops train the same freshly built VAE (same seed, data and Adam settings) on digits:
the bare loop is permute, index, loss, zero_grad, backward, step; ``vaebench.train.train`` adds
its divergence check, per-epoch history sums and the progress callback. Wall time per epoch,
median and IQR over ``--repeats`` alternating runs (alternating, so a busy neighbour hits both).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from vaebench.model import ModelSpec, build_model
from vaebench.registry import load_registry
from vaebench.step import StepSettings
from vaebench.train import train


def bare_loop(
    model, x: torch.Tensor, objective, *, epochs: int, batch_size: int, lr: float
) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order_rng = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=order_rng)
        for start in range(0, x.shape[0], batch_size):
            loss, _ = objective.loss(model, x[order[start : start + batch_size]], 0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def seconds_per_epoch(fn, epochs: int) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) / epochs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", default="mlp,conv")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    registry = load_registry()
    dataset = registry.get("dataset", "digits").factory(seed=0)
    objective = registry.get("model", "vae").factory()
    x = dataset.x_train
    print(f"digits train split {tuple(x.shape)}, batch {args.batch_size}, {args.epochs} epochs a "
          f"run, {args.repeats} runs, torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    for plugin in args.plugins.split(","):

        def fresh(plugin: str = plugin):
            torch.manual_seed(0)
            spec = ModelSpec(plugin, "normal", "bernoulli", dataset.input_shape, 16)
            return build_model(registry, spec, kernel_backend="torch")

        times: dict[str, list[float]] = {"bare": [], "vaebench": []}
        for _ in range(args.repeats):
            model = fresh()
            times["bare"].append(seconds_per_epoch(
                lambda m=model: bare_loop(m, x, objective, epochs=args.epochs, batch_size=args.batch_size, lr=2e-3),
                args.epochs))  # fmt: skip
            model = fresh()
            times["vaebench"].append(seconds_per_epoch(
                lambda m=model: train(m, x, objective=objective, epochs=args.epochs,
                                      batch_size=args.batch_size, settings=StepSettings(lr=2e-3), seed=0, on_step=lambda: None),
                args.epochs))  # fmt: skip
        bare, ours = (statistics.median(times[k]) for k in ("bare", "vaebench"))
        iqr = {
            k: np.subtract(*np.percentile(v, [75, 25])) / statistics.median(v)
            for k, v in times.items()
        }
        print(f"{plugin}: bare {bare * 1e3:.1f} ms/epoch (IQR {iqr['bare']:.0%}), vaebench "
              f"{ours * 1e3:.1f} ms/epoch (IQR {iqr['vaebench']:.0%}): overhead {ours / bare - 1:+.1%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
