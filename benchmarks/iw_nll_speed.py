"""The IW-NLL's speed against the decoder's own: how close the estimator runs to its floor.

    python -m benchmarks.iw_nll_speed [--samples 100,5000] [--hidden 400] [--latent 20] [--threads N]

Every importance sample costs one decoder pass, so the decoder's throughput (decoder passes
a second, no autograd) bounds ``metrics.iw_nll``; the estimator adds the encoder (once per
example), the reparameterization, the likelihood, the prior, q and a running log-sum-exp.
This prints the decoder's rate at the run's batch (what vaebench's decode column reports,
the reference of the >= 90 % target) and at its best batch (the ceiling), the IW-NLL's rate
and both ratios, and the peak resident memory the IW-NLL adds, for the static-MNIST shapes: 28x28 binary
images (random: cost does not depend on pixel values), the MLP 784-H-L with a Bernoulli
likelihood, fp32. Each figure is the median of ``--repeats`` timed calls after a warm-up,
with the spread (min-max); a call makes about ``--passes`` decoder passes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from vaebench import metrics
from vaebench.io import environment
from vaebench.model import ModelSpec, build_model
from vaebench.registry import load_registry


def peak_rss_mb(fn) -> tuple[object, float]:
    """``fn()`` and the peak resident memory it added (Linux: VmHWM after clear_refs)."""
    status = Path("/proc/self/status")

    def field(name: str) -> float:
        line = next(x for x in status.read_text().splitlines() if x.startswith(name))
        return int(line.split()[1]) / 1024

    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    except OSError:
        return fn(), float("nan")
    base = field("VmRSS:")
    value = fn()
    return value, field("VmHWM:") - base


def rates(fn, passes: int, repeats: int) -> tuple[float, float, float]:
    """(median, min, max) decoder passes a second over ``repeats`` timed calls."""
    fn()  # warm-up
    seen = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        seen.append(passes / (time.perf_counter() - started))
    return statistics.median(seen), min(seen), max(seen)


def decoder_rate(model, latent: int, repeats: int, passes: int, batches) -> tuple[int, tuple]:
    """The decoder's best rate over ``batches`` (no autograd, fp32 outputs)."""
    best = (0, (0.0, 0.0, 0.0))
    for batch in batches:
        z = torch.randn(batch, latent)
        calls = max(1, passes // batch)

        def decode(z=z, calls=calls):
            with torch.no_grad():
                for _ in range(calls):
                    model.decode(z)

        measured = rates(decode, calls * batch, repeats)
        if measured[0] > best[1][0]:
            best = (batch, measured)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="100,5000", help="K values, comma-separated")
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--latent", type=int, default=20)
    parser.add_argument("--passes", type=int, default=1_000_000, help="decoder passes a call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="the run's batch (decode column)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = ModelSpec("mlp", "normal", "bernoulli", (1, 28, 28), args.latent,
                     arch_options={"hidden": args.hidden})  # fmt: skip
    model = build_model(load_registry(), spec, kernel_backend="torch").eval()
    info = environment("cpu")
    print(f"# {info['device_name']}, {torch.get_num_threads()} threads, torch {info['torch']}, "
          f"fp32; MLP 784-{args.hidden}-{args.latent}, Bernoulli, 28x28 binary inputs")  # fmt: skip
    _, (run, run_lo, run_hi) = decoder_rate(
        model, args.latent, args.repeats, args.passes, (args.batch,)
    )
    print(f"decoder at the run's batch {args.batch} (vaebench's decode column): {run:,.0f} "
          f"passes/s (min {run_lo:,.0f}, max {run_hi:,.0f})")  # fmt: skip
    batch, (dec, dec_lo, dec_hi) = decoder_rate(
        model, args.latent, args.repeats, args.passes, (256, 1024, 2048, 4096, 16384)
    )
    print(f"decoder at its best batch {batch}: {dec:,.0f} passes/s (min {dec_lo:,.0f}, "
          f"max {dec_hi:,.0f})")  # fmt: skip
    for k in (int(v) for v in args.samples.split(",")):
        n = max(1, args.passes // k)
        x = (torch.rand(n, 1, 28, 28) < 0.13).float()
        with torch.no_grad():
            (rate, lo, hi), peak = peak_rss_mb(
                lambda x=x, k=k, n=n: rates(
                    lambda: metrics.iw_nll(model, x, k), n * k, args.repeats
                )
            )
        print(f"IW-NLL K={k}: {rate:,.0f} passes/s (min {lo:,.0f}, max {hi:,.0f}) over {n:,} "
              f"examples; {rate / run:.0%} of the decoder at batch {args.batch}, {rate / dec:.0%} "
              f"at its best; peak RSS added {peak:,.0f} MB; "
              f"K={k} on 10,000 test images: {10_000 * k / rate:,.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
