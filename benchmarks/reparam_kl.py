"""Time every reparameterize_kl backend and write the RESULTS.md table in one command.

    python -m benchmarks.reparam_kl --markdown benchmarks/RESULTS.md --csv benchmarks/reparam_kl.csv

On CUDA: ``triton.testing.do_bench`` (CUDA events, L2 flushed between runs; median and
20th/80th percentiles), the device-to-device copy bandwidth measured the same way as the
ceiling, and the peak memory of forward + backward. On the CPU: ``torch.utils.benchmark``
(median and IQR) for torch and compile only, since the Triton interpreter is a correctness
tool, not a timing one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from pathlib import Path

import pandas as pd
import torch

from benchmarks.cases import CPU_SIZES, DTYPES, GPU_SIZES, VARIANTS, Case, make_step, minimal_bytes
from vaebench.io import atomic_write_text, environment
from vaebench.timing import time_call

DIRECTIONS = ("forward", "fwd+bwd")


def time_ms(fn, device: torch.device) -> tuple[float, float, float]:
    """(median, low, high) milliseconds; low/high are the 20th/80th percentiles on CUDA, quartiles on the CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        median, low, high = do_bench(fn, warmup=50, rep=300, quantiles=[0.5, 0.2, 0.8])
        return median, low, high
    timing = time_call(fn, batch_size=1, device=device, min_run_time=0.5)
    return timing.median_s * 1e3, timing.q25_s * 1e3, timing.q75_s * 1e3


def copy_bandwidth_gbs(device: torch.device) -> float:
    """Device-to-device copy bandwidth: bytes read plus bytes written over the median time."""
    n_bytes = (1 << 30) if device.type == "cuda" else (1 << 27)
    src = torch.randn(n_bytes // 4, device=device)
    dst = torch.empty_like(src)
    median, _, _ = time_ms(lambda: dst.copy_(src), device)
    return 2 * n_bytes / (median * 1e-3) / 1e9


def peak_memory_mb(step, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak / 2**20


def available_variants(
    device: torch.device, include_interpreter: bool
) -> list[tuple[str, str, dict]]:
    if device.type == "cuda" or include_interpreter:
        return list(VARIANTS)
    return [v for v in VARIANTS if v[1] != "triton"]


def run(
    device: torch.device, sizes, dtypes: list[str], variants, directions=DIRECTIONS
) -> pd.DataFrame:
    ceiling = copy_bandwidth_gbs(device)
    print(f"copy bandwidth on {device}: {ceiling:,.0f} GB/s (read + write)", file=sys.stderr)
    rows = []
    for n, d in sizes:
        for dtype_name in dtypes:
            case = Case(n, d, DTYPES[dtype_name], device)
            for label, backend, kwargs in variants:
                for direction in directions:
                    step = make_step(case, backend, direction, **kwargs)
                    median, low, high = time_ms(step, device)
                    moved = minimal_bytes(n, d, case.dtype, direction)
                    gbs = moved / (median * 1e-3) / 1e9
                    rows.append(
                        {
                            "backend": label,
                            "direction": direction,
                            "N": n,
                            "D": d,
                            "dtype": dtype_name,
                            "median_ms": median,
                            "low_ms": low,
                            "high_ms": high,
                            "min_bytes": moved,
                            "GB_per_s": gbs,
                            "fraction_of_copy_bw": gbs / ceiling,
                            "copy_bw_GB_per_s": ceiling,
                            "peak_mem_MB": peak_memory_mb(step, device)
                            if direction == "fwd+bwd"
                            else None,
                        }
                    )
                    print(
                        f"{label:>20} {direction:>8} {n}x{d} {dtype_name}: {median:.4f} ms, {gbs:,.0f} GB/s",
                        file=sys.stderr,
                    )
                    del step
    frame = pd.DataFrame(rows)
    eager = frame[frame.backend == "torch"].set_index(["direction", "N", "D", "dtype"])["median_ms"]
    frame["speedup_vs_torch"] = [
        eager.get((r.direction, r.N, r.D, r.dtype), float("nan")) / r.median_ms
        for r in frame.itertuples()
    ]
    return frame


def conditions(device: torch.device) -> dict[str, str]:
    """``vaebench.io.environment`` (what runs record too), the date and the command."""
    info = environment(device.type)
    return {
        "date": dt.date.today().isoformat(),
        "device": f"{info['device_name']}, {info['torch_threads']} threads",
        **{key: str(info[key]) for key in ("torch", "triton", "cuda", "python", "git_commit")},
        "command": f"python -m benchmarks.{Path(sys.argv[0]).stem} " + shlex.join(sys.argv[1:]),
    }


def to_markdown(frame: pd.DataFrame, info: dict[str, str]) -> str:
    lines = ["# reparameterize_kl benchmark", ""]
    lines += [f"- {key}: `{value}`" for key, value in info.items()]
    lines += [
        f"- device-to-device copy bandwidth (read + write): {frame['copy_bw_GB_per_s'].iloc[0]:,.0f} GB/s",
        "- GB/s counts the minimal bytes (forward: read mu, logvar, write z, kl; backward: read mu, logvar,",
        "  grad_z, grad_kl, write grad_mu, grad_logvar); time is the median, low/high the 20th/80th percentiles",
        "  on CUDA (quartiles on the CPU).",
        "",
        "| backend | direction | N x D | dtype | median ms | low-high ms | GB/s | of copy BW | vs torch | peak MiB |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in frame.itertuples():
        peak = "" if pd.isna(r.peak_mem_MB) else f"{r.peak_mem_MB:,.0f}"
        lines.append(
            f"| {r.backend} | {r.direction} | {r.N}x{r.D} | {r.dtype} | {r.median_ms:.4f} | "
            f"{r.low_ms:.4f}-{r.high_ms:.4f} | {r.GB_per_s:,.1f} | {r.fraction_of_copy_bw:.1%} | "
            f"{r.speedup_vs_torch:.2f}x | {peak} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--sizes", default=None, help="comma list of NxD, e.g. 4096x64,1048576x96")
    parser.add_argument(
        "--backends", default=None, help="comma list of variant labels (default: all available)"
    )
    parser.add_argument(
        "--include-interpreter",
        action="store_true",
        help="time triton through TRITON_INTERPRET on the CPU too",
    )
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.sizes:
        sizes = [tuple(int(v) for v in item.split("x")) for item in args.sizes.split(",")]
    else:
        sizes = GPU_SIZES if device.type == "cuda" else CPU_SIZES
    variants = available_variants(device, args.include_interpreter)
    if args.backends:
        wanted = args.backends.split(",")
        unknown = sorted(set(wanted) - {v[0] for v in variants})
        if unknown:
            parser.error(
                f"unknown or unavailable backends {unknown}; available: {[v[0] for v in variants]}"
            )
        variants = [v for v in variants if v[0] in wanted]
    frame = run(device, sizes, args.dtypes.split(","), variants)
    text = to_markdown(frame, conditions(device))
    print(text)
    if args.markdown:
        atomic_write_text(args.markdown, text)
    if args.csv:
        atomic_write_text(args.csv, frame.to_csv(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
