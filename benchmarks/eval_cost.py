"""What evaluation costs at the literature's scale: the IW-NLL at K = 5000 on a 10,000-example
test set, every other test metric, and one training epoch for scale.

    python -m benchmarks.eval_cost [--n-train 50000] [--n-test 10000] [--samples 5000] [--plugin mlp]

The data is binary 28x28 noise in the static-MNIST shapes (cost does not depend on pixel
values), written to a temporary .npz and run through the real path: ``RunContext.resolve``
(which also trains the sample-quality classifier, a once-per-run cost reported separately),
``train`` for one epoch, ``runner.evaluate`` with K = 1 (everything but the IW-NLL's extra
samples) and ``metrics.iw_nll`` at K. One timed call each: at these sizes a repeat costs
minutes and the run-to-run spread is a few percent (stated with the figures). Libraries are
imported before the clock starts (scikit-learn's first import alone takes ~2.5 s here).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vaebench import allocator, metrics
from vaebench.config import RunConfig
from vaebench.io import environment
from vaebench.model import ModelSpec, build_model
from vaebench.registry import load_registry
from vaebench.resolve import resolve_config
from vaebench.runner import RunContext, evaluate
from vaebench.step import StepSettings
from vaebench.train import train


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=50000)
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--plugin", default="mlp")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args(argv)
    allocator.keep_freed_memory()  # as a vaebench run sets it

    rng = np.random.default_rng(0)

    def images(n: int) -> np.ndarray:
        return (rng.random((n, 28, 28)) < 0.13).astype(np.uint8)

    def labels(n: int) -> np.ndarray:
        return rng.integers(0, 10, n)

    import sklearn.linear_model  # noqa: F401  (imported once per process; not evaluation's cost)

    registry = load_registry()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.npz"
        np.savez(
            data,
            x_train=images(args.n_train),
            y_train=labels(args.n_train),
            x_valid=images(1000),
            y_valid=labels(1000),
            x_test=images(args.n_test),
            y_test=labels(args.n_test),
        )
        config = resolve_config(
            RunConfig(
                dataset=str(data),
                plugins=[args.plugin],
                latent_dim=40,
                batch_size=args.batch_size,
                epochs=1,
                iw_samples=1,
                out=str(Path(tmp) / "run"),
            ),
            registry,
        )
        context, resolve_s = timed(lambda: RunContext.resolve(config, registry))
    spec = ModelSpec(args.plugin, "normal", "bernoulli", (1, 28, 28), 40, {}, {})
    torch.manual_seed(0)
    model = build_model(registry, spec)
    objective = registry.get("model", "vae").factory()
    _, epoch_s = timed(
        lambda: train(
            model,
            context.x_train,
            objective=objective,
            epochs=1,
            batch_size=args.batch_size,
            settings=StepSettings(lr=1e-3),
            seed=0,
        )
    )
    _, rest_s = timed(lambda: evaluate(model, objective, context, iw_samples=1, seed=0))
    model.eval()
    iw, iw_s = timed(lambda: metrics.iw_nll(model, context.x_test, args.samples))
    env = environment(config.device)
    print(
        f"device {env.get('cpu') or config.device}, torch {torch.__version__}, float32, "
        f"{torch.get_num_threads()} threads; {args.plugin} VAE, 40 latents, 28x28 binary inputs"
    )
    print("| work | size | seconds |\n| --- | --- | ---: |")
    print(
        f"| one training epoch (batch {args.batch_size}) | {args.n_train:,} examples | {epoch_s:.1f} |"
    )
    print(
        f"| every test metric but the IW-NLL's samples (K = 1) | {args.n_test:,} examples | {rest_s:.1f} |"
    )
    print(f"| IW-NLL, K = {args.samples:,} | {args.n_test:,} examples | {iw_s:.1f} |")
    print(
        f"| run setup (data, classifier, kernel timing) | {args.n_train:,} + {args.n_test:,} | {resolve_s:.1f} |"
    )
    print(f"IW-NLL of the 1-epoch model: {iw:.2f} nats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
