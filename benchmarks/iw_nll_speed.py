"""The IW-NLL's speed against the decoder's own: how close the estimator runs to its floor.

    python -m benchmarks.iw_nll_speed [--samples 100,5000] [--hidden 400] [--latent 20]
        [--threads N] [--processes N]

Every importance sample costs one decoder pass, so the decoder's throughput (decoder passes
a second, no autograd) bounds ``metrics.iw_nll``; the estimator adds the encoder (once per
example), the reparameterization, the likelihood, the prior, q and a running log-sum-exp.
This prints the decoder's rate at the run's batch (what vaebench's decode column reports,
the reference of the >= 90 % target) and at its best batch (the ceiling), the IW-NLL's rate
and both ratios, the peak tensor memory of one IW-NLL call (the profiler's allocation events:
what the estimator holds, whatever malloc keeps mapped) and its page faults, for the
static-MNIST shapes: 28x28 binary images (random: cost does not depend on pixel values), the
MLP 784-H-L with a Bernoulli likelihood, fp32. Each figure is the median of ``--repeats``
timed calls after a warm-up, with the spread (min-max); a call makes about ``--passes``
decoder passes (about a second). Every round times each figure once in turn (the decoder
figures get one more call to close the last round), and each IW-NLL call is divided by the
decoder's rate over the calls just before and just after it (the same seconds of a machine
whose speed drifts by 20 % within a minute) before the median of those ratios is taken; the
ratio of the medians is printed beside it. The process sets glibc's malloc as a vaebench
run does (``vaebench.allocator``); ``--system-malloc`` keeps glibc's defaults. A process's
figures differ from the next one's by as much as the drift (the decoder's rate at batch 100
by 20-30 % here), so ``--processes N`` runs N fresh processes one after another and ends with
the figures of each and their medians.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from vaebench import allocator, metrics
from vaebench.io import environment
from vaebench.model import ModelSpec, build_model
from vaebench.modes import peak_memory_mb
from vaebench.registry import load_registry

FAULTS: dict = {}  # minor page faults per timed call's function, summed over its calls


def timed_rate(fn, passes: int) -> float:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    FAULTS[fn] = FAULTS.get(fn, 0) + resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return passes / elapsed


def decoder_call(model, latent: int, batch: int, passes: int):
    """Decoder passes in calls of ``batch`` (no autograd, fp32 outputs), and their count."""
    z = torch.randn(batch, latent)
    calls = max(1, passes // batch)

    def decode() -> None:
        with torch.no_grad():
            for _ in range(calls):
                model.decode(z)

    return decode, calls * batch


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} (min {min(values):,.0f}, max {max(values):,.0f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="100,5000", help="K values, comma-separated")
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--latent", type=int, default=20)
    parser.add_argument("--passes", type=int, default=200_000, help="decoder passes a call")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=100, help="the run's batch (decode column)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--system-malloc", action="store_true", help="keep glibc's default malloc thresholds"
    )
    parser.add_argument("--processes", type=int, default=1, help="fresh processes, in turn")
    args = parser.parse_args(argv)
    if args.processes > 1:
        return in_processes(args.processes, list(sys.argv[1:] if argv is None else argv))
    malloc = allocator.description() if args.system_malloc else allocator.keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = ModelSpec("mlp", "normal", "bernoulli", (1, 28, 28), args.latent,
                     arch_options={"hidden": args.hidden})  # fmt: skip
    model = build_model(load_registry(), spec, kernel_backend="torch").eval()
    info = environment("cpu")
    print(f"# {info['device_name']}, {torch.get_num_threads()} threads, torch {info['torch']}, "
          f"fp32; MLP 784-{args.hidden}-{args.latent}, Bernoulli, 28x28 binary inputs; "
          f"median of {args.repeats} rounds, each timing every figure once in turn; "
          f"malloc: {malloc}")  # fmt: skip
    scan = {b: decoder_call(model, args.latent, b, args.passes) for b in (256, 1024, 4096, 16384)}
    for fn, _ in scan.values():
        fn()  # warm-up
    best = max(scan, key=lambda b: timed_rate(*scan[b]))
    calls = {"run": decoder_call(model, args.latent, args.batch, args.passes), "best": scan[best]}
    for k in (int(v) for v in args.samples.split(",")):
        n = max(1, args.passes // k)
        x = (torch.rand(n, 1, 28, 28) < 0.13).float()

        def estimate(x=x, k=k) -> None:
            with torch.no_grad():
                metrics.iw_nll(model, x, k)

        calls[k] = (estimate, n * k)
    peaks = {}
    for key, (fn, _) in calls.items():  # warm-up, and the peak tensor memory of a call
        peaks[key] = peak_memory_mb(fn, torch.device("cpu"))
    seen: dict = {key: [] for key in calls}
    for _ in range(args.repeats):  # in turn, so a slow spell of the machine hits every figure
        for key, (fn, passes) in calls.items():
            seen[key].append(timed_rate(fn, passes))
    for key in ("run", "best"):  # close the last round's brackets
        seen[key].append(timed_rate(*calls[key]))
    print(f"decoder at the run's batch {args.batch} (vaebench's decode column): "
          f"{spread(seen['run'])} passes/s")  # fmt: skip
    print(f"decoder at its best batch {best}: {spread(seen['best'])} passes/s")
    summary: dict = {"decoder": statistics.median(seen["run"]), "K": {}}
    for key in (k for k in calls if isinstance(k, int)):
        fn, passes = calls[key]
        faults = FAULTS.get(fn, 0) / (args.repeats * passes) * 1000
        rate = statistics.median(seen[key])
        # each IW-NLL call against the decoder calls that bracket it in time
        paired = {  # equal passes per call: the bracket's rate is the harmonic mean
            ref: [
                v / statistics.harmonic_mean(seen[ref][i : i + 2]) for i, v in enumerate(seen[key])
            ]
            for ref in ("run", "best")
        }
        of_medians = {ref: rate / statistics.median(seen[ref]) for ref in paired}
        ratio = {ref: f"{statistics.median(v):.0%} ({min(v):.0%}-{max(v):.0%}; ratio of "
                      f"medians {of_medians[ref]:.0%})"
                 for ref, v in paired.items()}  # fmt: skip
        print(f"IW-NLL K={key}: {spread(seen[key])} passes/s over {passes // key:,} examples; "
              f"{ratio['run']} of the decoder at batch {args.batch}, {ratio['best']} "
              f"of it at its best; peak tensor memory {peaks[key]:,.1f} MiB; {faults:.1f} page "
              f"faults per 1,000 passes; K={key} on "
              f"10,000 test images: {10_000 * key / rate:,.0f} s")  # fmt: skip
        summary["K"][key] = {
            "rate": rate,
            "bracketed": statistics.median(paired["run"]),
            "of_medians": of_medians["run"],
        }
    print(SUMMARY + json.dumps(summary), flush=True)
    return 0


SUMMARY = "# summary "  # the line a parent process reads


def in_processes(count: int, argv: list[str]) -> int:
    """Run the benchmark in ``count`` fresh processes in turn; print each one's figures and
    the medians over them."""
    runs = []
    for index in range(count):
        print(f"## process {index + 1} of {count}", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.iw_nll_speed", *argv, "--processes", "1"],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
        for line in done.stdout.splitlines():
            if line.startswith(SUMMARY):
                runs.append(json.loads(line.removeprefix(SUMMARY)))
            else:
                print(line, flush=True)
    rows = [("decoder at the run's batch, passes/s", [r["decoder"] for r in runs], "{:,.0f}")]
    for k in runs[0]["K"]:
        for field, label, fmt in (
            ("rate", f"IW-NLL K={k}, passes/s", "{:,.0f}"),
            ("bracketed", f"K={k} of the decoder, bracketed", "{:.0%}"),
            ("of_medians", f"K={k} of the decoder, ratio of medians", "{:.0%}"),
        ):
            rows.append((label, [r["K"][k][field] for r in runs], fmt))
    print(f"## {count} processes: each, then the median")
    for label, values, fmt in rows:
        cells = " ".join(fmt.format(v) for v in values)
        print(f"{label}: {cells}; median {fmt.format(statistics.median(values))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
