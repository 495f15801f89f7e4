"""What vaebench's training loop costs over a bare PyTorch loop on the same modules.

    python -m benchmarks.loop_overhead [--data digits|static-mnist] [--plugins mlp,conv]
        [--batch-size 128] [--epochs 3] [--repeats 5] [--hidden 400] [--latent 16]

Both loops train the same freshly built VAE (same seed, data and Adam settings): the bare loop
is permute, index, loss, zero_grad, backward, step; ``vaebench.train.train`` adds its
divergence check, per-epoch history sums and the progress callback, and (second figure) a
validation pass after every epoch, which it reports apart (``valid_seconds``) from the
training time (``seconds``). ``--data static-mnist`` uses the static-MNIST shapes: 50,000
training and 10,000 validation 28x28 binary images (random: the cost does not depend on pixel
values). Wall time per epoch, median and IQR over ``--repeats`` alternating runs
(alternating, so a busy neighbour hits each loop alike).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from vaebench import allocator
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


def splits(data: str, registry) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    if data == "static-mnist":
        gen = torch.Generator().manual_seed(0)
        images = (torch.rand(60_000, 1, 28, 28, generator=gen) < 0.13).float()
        return images[:50_000], images[50_000:], (1, 28, 28)
    dataset = registry.get("dataset", "digits").factory(seed=0)
    return dataset.x_train, dataset.x_test, dataset.input_shape


def spread(times: list[float]) -> str:
    return f"IQR {np.subtract(*np.percentile(times, [75, 25])) / statistics.median(times):.0%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("digits", "static-mnist"), default="digits")
    parser.add_argument("--plugins", default="mlp,conv")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=0, help="-A hidden= of the mlp (0: default)")
    parser.add_argument("--latent", type=int, default=16)
    args = parser.parse_args(argv)
    allocator.keep_freed_memory()  # as a vaebench run sets it (both loops alike)
    registry = load_registry()
    x, x_valid, shape = splits(args.data, registry)
    objective = registry.get("model", "vae").factory()
    print(f"{args.data}: train {tuple(x.shape)}, validation {tuple(x_valid.shape)}, batch "
          f"{args.batch_size}, latent {args.latent}, {args.epochs} epochs a run, {args.repeats} "
          f"runs, torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    for plugin in args.plugins.split(","):
        arch = {"hidden": args.hidden} if args.hidden and plugin == "mlp" else {}

        def fresh(plugin: str = plugin, arch=arch):
            torch.manual_seed(0)
            spec = ModelSpec(plugin, "normal", "bernoulli", shape, args.latent, arch_options=arch)
            return build_model(registry, spec, kernel_backend="torch")

        def ours(valid):
            outcome = train(fresh(), x, objective=objective, epochs=args.epochs,
                            batch_size=args.batch_size, settings=StepSettings(lr=2e-3), seed=0,
                            on_step=lambda: None, x_valid=valid)  # fmt: skip
            return outcome.seconds / args.epochs, outcome.valid_seconds / args.epochs

        times: dict[str, list[float]] = {"bare": [], "vaebench": [], "with-valid": [], "valid": []}
        for _ in range(args.repeats):
            model = fresh()
            started = time.perf_counter()
            bare_loop(model, x, objective, epochs=args.epochs, batch_size=args.batch_size, lr=2e-3)
            times["bare"].append((time.perf_counter() - started) / args.epochs)
            times["vaebench"].append(ours(None)[0])
            trained, validated = ours(x_valid)
            times["with-valid"].append(trained)
            times["valid"].append(validated)
        bare, plain, trained, valid = (statistics.median(times[k]) for k in times)
        print(f"{plugin}: bare {bare * 1e3:.0f} ms/epoch ({spread(times['bare'])}); vaebench "
              f"training {plain * 1e3:.0f} ms/epoch ({spread(times['vaebench'])}): "
              f"{bare / plain:.2f}x the bare loop's speed; with validation every epoch: training "
              f"{trained * 1e3:.0f} ms/epoch ({bare / trained:.2f}x), validation reported apart "
              f"{valid * 1e3:.0f} ms/epoch ({spread(times['valid'])})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
