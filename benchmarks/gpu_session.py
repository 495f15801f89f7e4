"""One command for the day a GPU is lent: every kernel figure, within 9 minutes on an H100.

    python -m benchmarks.gpu_session --out DIR            # on the GPU machine
    python -m benchmarks.gpu_session --out DIR --smoke    # anywhere: the same steps, tiny sizes

Each figure is appended to ``DIR/gpu_session.csv`` the moment it is measured (flushed, so a
run cut off by a time limit keeps everything measured), and ``DIR/RESULTS-gpu.md`` is written
at the end. Steps, in order:

1. the kernel tests on this device (stop if any fails);
2. the device-to-device copy bandwidth and the empty-kernel launch floor;
3. forward and forward + backward at the sizes the runner uses (batch 64-4096, latent 16, 20,
   50, 128, 512, samples 1 / 5 / 100 with log q), fp32 and bf16, each timed three ways:
   device time (``triton.testing.do_bench``: CUDA events, L2 flushed), host wall time per
   call in a loop, and CUDA-graph replay;
4. bandwidth-bound sizes (about 1e8 elements) against fair peers: eager PyTorch and
   ``torch.compile`` of the reference with the noise drawn inside the compiled region
   (modes ``default`` and ``reduce-overhead``);
5. the benchmark variants (stored / recovered noise, philox4, fast-math Box-Muller with each
   generator) at bandwidth-bound sizes;
6. one end-to-end ``vaebench run`` on MNIST-sized synthetic data per kernel backend;
7. issue 13's modes: ``vaebench run --plugins conv,mlp --precision fp32,bf16,fp16
   --compile none,default --timing-batch-sizes 64,256,1024`` (5 epochs), then with
   ``--cuda-graphs``: throughput, best batch, peak memory, quality delta, device busy.

``--smoke`` runs on the CPU through Triton's interpreter with tiny sizes and short timing: it
proves the script works (a test runs it), its figures are not timing claims. CUDA-graph
replays time the default call: its Philox key is drawn on the device inside the graph, so
every replay draws fresh noise, as training under a captured step would (the kernel tests
check that on the GPU). The fast-math variants need CUDA: ``--smoke`` leaves them out.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.reparam_kl import conditions, copy_bandwidth_gbs
from vaebench.io import atomic_write_text
from vaebench.kernels import reparameterize_kl, reparameterize_kl_reference
from vaebench.schema import row_label
from vaebench.timing import time_call

FIELDS = (
    "step", "backend", "direction", "method", "N", "D", "samples", "log_q", "dtype",
    "median_ms", "low_ms", "high_ms", "GB_per_s", "fraction_of_copy_bw", "peak_mem_MB", "note",
)  # fmt: skip
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
KERNEL_TESTS = (
    "tests/test_kernels_reference.py",
    "tests/test_kernels_triton.py",
    "tests/test_kernels_op.py",
    "tests/test_properties.py",
)


class Recorder:
    """Appends each measurement to the CSV at once; keeps the rows for the summary."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows = path, []
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            csv.DictWriter(handle, FIELDS).writeheader()

    def add(self, **row: object) -> None:
        row = {key: row.get(key, "") for key in FIELDS}
        self.rows.append(row)
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, FIELDS).writerow(row)
            handle.flush()
            os.fsync(handle.fileno())
        print(" ".join(f"{k}={v}" for k, v in row.items() if v != ""), file=sys.stderr, flush=True)


class Session:
    def __init__(self, out: Path, smoke: bool, budget_s: float) -> None:
        self.device = torch.device("cpu" if smoke else "cuda")
        self.smoke, self.deadline = smoke, time.monotonic() + budget_s
        self.record = Recorder(out / "gpu_session.csv")
        self.out, self.copy_bw = out, float("nan")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    # -- timing -----------------------------------------------------------------------------
    def device_ms(self, fn: Callable[[], object], rep_ms: int = 60) -> tuple[float, float, float]:
        if self.smoke:
            t = time_call(fn, batch_size=1, device=self.device, min_run_time=0.01)
            return t.median_s * 1e3, t.q25_s * 1e3, t.q75_s * 1e3
        from triton.testing import do_bench

        return tuple(do_bench(fn, warmup=15, rep=rep_ms, quantiles=[0.5, 0.2, 0.8]))

    def host_ms(self, fn: Callable[[], object], calls: int = 50) -> float:
        """Wall time per call of back-to-back calls: what the host pays per launch."""
        for _ in range(3):
            fn()
        self.sync()
        start = time.perf_counter()
        for _ in range(calls if not self.smoke else 3):
            fn()
        self.sync()
        return (time.perf_counter() - start) * 1e3 / (calls if not self.smoke else 3)

    def graph_ms(self, fn: Callable[[], object]) -> float | None:
        if self.device.type != "cuda":
            return None
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return self.device_ms(graph.replay)[0]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def peak_mb(self, fn: Callable[[], object]) -> float | str:
        if self.device.type != "cuda":
            return ""
        self.sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        self.sync()
        del out
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    # -- steps ------------------------------------------------------------------------------
    def kernel_tests(self) -> bool:
        env = dict(os.environ)
        if self.smoke:
            env["TRITON_INTERPRET"] = "1"
        else:
            env.pop("TRITON_INTERPRET", None)
        files = KERNEL_TESTS[:1] if self.smoke else KERNEL_TESTS
        started = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pytest", *files, "-q", "-x", "-p", "no:cacheprovider"],
                env=env,
                capture_output=True,
                text=True,
                timeout=max(30, self.left() / 3),
            )
        except subprocess.TimeoutExpired:
            self.record.add(step="tests", backend="pytest", note="FAILED: timed out")
            return False
        summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
        self.record.add(
            step="tests",
            backend="pytest",
            median_ms=(time.perf_counter() - started) * 1e3,
            note=("passed: " if done.returncode == 0 else "FAILED: ") + summary,
        )
        return done.returncode == 0

    def floor(self) -> None:
        import triton
        import triton.language as tl

        @triton.jit
        def empty(x_ptr):
            pass

        x = torch.empty(1, device=self.device)
        self.copy_bw = copy_bandwidth_gbs(self.device)
        self.record.add(step="floor", backend="copy", method="device", GB_per_s=self.copy_bw)
        launch = functools.partial(empty[(1,)], x)
        self.record.add(
            step="floor", backend="empty-triton", method="host", median_ms=self.host_ms(launch)
        )
        del tl

    def measure(self, step: str, backend: str, call, n: int, d: int, samples: int, log_q: bool, dtype: str,
                methods=("device", "host", "graph")) -> None:  # fmt: skip
        """Forward and forward + backward of ``call`` at one size, by each timing method."""
        gen = torch.Generator(device=self.device).manual_seed(0)
        dt = DTYPES[dtype]
        mu = torch.randn(n, d, generator=gen, device=self.device).to(dt).requires_grad_()
        logvar = (
            (0.5 * torch.randn(n, d, generator=gen, device=self.device)).to(dt).requires_grad_()
        )
        z_shape = (n, d) if samples == 1 else (samples, n, d)
        grads = [torch.randn(z_shape, generator=gen, device=self.device).to(dt),
                 torch.randn(n, generator=gen, device=self.device)]  # fmt: skip
        if log_q:
            grads.append(torch.randn(z_shape[:-1], generator=gen, device=self.device))

        def steps(**extra):
            def forward():
                with torch.no_grad():
                    return call(mu, logvar, samples=samples, return_log_q=log_q, **extra)

            def forward_backward():
                outs = call(mu, logvar, samples=samples, return_log_q=log_q, **extra)
                return torch.autograd.grad(outs, (mu, logvar), grads)

            return {"forward": forward, "fwd+bwd": forward_backward}

        default = steps()  # the key is drawn on the device: graph replays draw fresh noise

        elem = torch.empty((), dtype=dt).element_size()
        moved = {"forward": (2 * n * d + samples * n * d) * elem + 4 * n * (1 + samples * log_q)}
        moved["fwd+bwd"] = (
            moved["forward"] + (4 * n * d + samples * n * d) * elem + 4 * n * (1 + samples * log_q)
        )
        for direction in ("forward", "fwd+bwd"):
            for method in methods:
                fn = default[direction]
                if self.left() < 5:
                    return
                try:
                    if method == "device":
                        median, low, high = self.device_ms(fn)
                    elif method == "host":
                        median = low = high = self.host_ms(fn)
                    else:
                        median = self.graph_ms(fn)
                        if median is None:
                            continue
                        low = high = median
                except Exception as exc:  # one figure failing must not stop the session
                    self.record.add(step=step, backend=backend, direction=direction, method=method,
                                    N=n, D=d, samples=samples, log_q=log_q, dtype=dtype,
                                    note=f"error: {type(exc).__name__}: {exc}"[:200])  # fmt: skip
                    continue
                gbs = moved[direction] / (median * 1e-3) / 1e9
                self.record.add(
                    step=step, backend=backend, direction=direction, method=method, N=n, D=d,
                    samples=samples, log_q=log_q, dtype=dtype, median_ms=median, low_ms=low,
                    high_ms=high, GB_per_s=gbs, fraction_of_copy_bw=gbs / self.copy_bw,
                    peak_mem_MB=self.peak_mb(fn) if method == "device" and direction == "fwd+bwd" else "",
                )  # fmt: skip

    def runner_sizes(self) -> None:
        batches = (64,) if self.smoke else (64, 256, 1024, 4096)
        latents = (16, 20) if self.smoke else (16, 20, 50, 128, 512)
        shapes = ((1, False), (5, True)) if self.smoke else ((1, False), (5, True), (100, True))
        for dtype in ("fp32",) if self.smoke else ("fp32", "bf16"):
            for samples, log_q in shapes:
                for n in batches:
                    for d in latents:
                        for backend in ("triton", "torch"):
                            call = functools.partial(reparameterize_kl, backend=backend)
                            methods = (
                                ("device", "host", "graph") if backend == "triton" else ("device",)
                            )
                            self.measure(
                                "runner", backend, call, n, d, samples, log_q, dtype, methods
                            )

    def peers(self, sizes) -> None:
        def reference_with_noise(mu, logvar, *, samples=1, return_log_q=False):
            shape = mu.shape if samples == 1 else (samples, *mu.shape)
            eps = torch.randn(shape, device=mu.device, dtype=torch.float32)
            return reparameterize_kl_reference(mu, logvar, eps, return_log_q=return_log_q)

        contenders = [("triton", functools.partial(reparameterize_kl, backend="triton")),
                      ("eager", reference_with_noise)]  # fmt: skip
        modes = ("default",) if self.smoke else ("default", "reduce-overhead")
        contenders += [(f"compile-{m}", torch.compile(reference_with_noise, mode=m)) for m in modes]
        for n, d in sizes:
            for dtype in ("fp32",) if self.smoke else ("fp32", "bf16"):
                for name, call in contenders:
                    self.measure("bandwidth", name, call, n, d, 1, False, dtype, ("device",))

    def variants(self, sizes) -> None:
        from vaebench.kernels.reparam_kl import reparameterize_kl_variant

        variants = [("triton-store-noise", {"noise": "store"}),
                    ("triton-recover-noise", {"noise": "recover"}),
                    ("triton-philox4", {"rng": "philox4"})]  # fmt: skip
        if self.device.type == "cuda":  # the SFU approximations do not run in the interpreter
            variants += [("triton-fast-math", {"fast_math": True}),
                         ("triton-philox4-fast-math", {"rng": "philox4", "fast_math": True})]  # fmt: skip
        for label, kwargs in variants:
            call = functools.partial(reparameterize_kl_variant, **kwargs)
            for n, d in sizes:
                self.measure("variants", label, call, n, d, 1, False, "fp32", ("device",))

    def _vaebench_run(self, step: str, label: str, folder: Path, args: list[str]) -> list[dict]:
        """One ``vaebench run`` in a child process; its rows, or [] with a note recorded."""
        env = dict(os.environ, **({"TRITON_INTERPRET": "1"} if self.smoke else {}))
        command = [sys.executable, "-m", "vaebench", "run", *args, "--device", self.device.type,
                   "--timing-min-time", "0.05" if self.smoke else "0.3", "--out", str(folder),
                   "--overwrite", "--quiet"]  # fmt: skip
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=max(60, self.left())
            )
        except subprocess.TimeoutExpired:
            self.record.add(step=step, backend=label, note="timed out")
            return []
        if done.returncode != 0:
            self.record.add(step=step, backend=label, note=done.stderr.strip()[-200:])
            return []
        return json.loads((folder / "results.json").read_text())

    def end_to_end(self) -> None:
        options = ["-D", "n_train=256", "-D", "n_test=64", "--epochs", "1"] if self.smoke else \
            ["-D", "n_train=60000", "-D", "n_test=10000", "-D", "side=28", "--epochs", "1"]  # fmt: skip
        for kernel in ("torch", "compile", "triton"):
            if self.left() < 60 and not self.smoke:
                return
            args = ["--dataset", "synthetic", *options, "--kernel", kernel, "--iw-samples", "8"]
            rows = self._vaebench_run("end-to-end", kernel, self.out / f"e2e-{kernel}", args)
            for row in rows[:1]:
                for phase in ("train", "encode", "decode"):
                    rate = row[f"{phase}_samples_per_s"]
                    self.record.add(step="end-to-end", backend=kernel, direction=phase, method="run",
                                    N=row["timing_batch_size"], D=row["latent_dim"], dtype="fp32",
                                    median_ms=1e3 * row["timing_batch_size"] / rate,
                                    note=f"{rate:,.0f} samples/s; train {row['train_seconds']:.1f} s/epoch")  # fmt: skip

    def modes(self) -> None:
        """Issue 13's command on this device: each plugin in fp32, bf16 and fp16, eager and
        compiled, then again with CUDA graphs; throughput curves, peak memory, quality deltas."""
        if self.smoke:
            runs = {"modes": ["--dataset", "synthetic", "-D", "n_train=128", "-D", "n_test=32",
                              "--epochs", "1", "--plugins", "mlp", "--precision", "fp32,bf16",
                              "--timing-batch-sizes", "8,16", "--iw-samples", "4"]}  # fmt: skip
        else:
            common = ["--plugins", "conv,mlp", "--epochs", "5", "--precision", "fp32,bf16,fp16",
                      "--timing-batch-sizes", "64,256,1024"]  # fmt: skip
            runs = {"modes": [*common, "--compile", "none,default"],
                    "modes-graphs": [*common, "--cuda-graphs"]}  # fmt: skip
        for name, args in runs.items():
            if self.left() < 90 and not self.smoke:
                return
            for row in self._vaebench_run(name, name, self.out / name, args):
                label = row_label(row)
                if row["status"] != "ok":
                    self.record.add(step=name, backend=label, note=row["status"][:200])
                    continue

                self.record.add(
                    step=name, backend=label, direction="train", method="run",
                    N=row["timing_batch_size"], D=row["latent_dim"], dtype=row["precision"],
                    median_ms=1e3 * row["timing_batch_size"] / row["train_samples_per_s"],
                    peak_mem_MB=row.get("train_peak_mb") or "",
                    note=f"{_figure(row, 'train_samples_per_s', ',.0f')} samples/s; best batch "
                         f"{_figure(row, 'best_train_batch_size', 'd')}; dIW-NLL "
                         f"{_figure(row, 'delta_iw_nll_vs_fp32_eager', '+.3f')}; busy "
                         f"{_figure(row, 'train_device_busy', '.0%')}; compile "
                         f"{_figure(row, 'compile_seconds', '.0f')} s",
                )  # fmt: skip


def _figure(row: dict, key: str, spec: str) -> str:
    """A value of a results file, formatted; absent or null (not measured) reads "–"."""
    value = row.get(key)
    return "–" if value is None else format(value, spec)


def _ms(rows: list[dict], **match: object) -> float | None:
    found = [r["median_ms"] for r in rows if all(r[k] == v for k, v in match.items())]
    return found[0] if found and found[0] != "" else None


def targets(rows: list[dict]) -> list[str]:
    """Issue 12's targets, each with the figure that decides it (or why it is undecided)."""
    lines = ["", "## Targets", ""]
    bw = [
        r
        for r in rows
        if r["step"] == "bandwidth"
        and r["backend"] == "triton"
        and r["dtype"] == "fp32"
        and r["median_ms"] != ""  # a failed measurement decides nothing
    ]
    for r in bw:
        verdict = "met" if r["fraction_of_copy_bw"] >= 0.85 else "NOT met"
        lines.append(f"- {r['direction']} {r['N']}x{r['D']} fp32 at >= 85% of copy bandwidth: "
                     f"{r['fraction_of_copy_bw']:.0%} ({verdict})")  # fmt: skip
    for r in (r for r in bw if r["direction"] == "fwd+bwd"):
        key = {
            "step": "bandwidth",
            "direction": "fwd+bwd",
            "N": r["N"],
            "D": r["D"],
            "dtype": "fp32",
        }
        for peer, need in (("eager", 3.0), ("compile-default", 1.15)):
            other = _ms(rows, backend=peer, **key)
            if other is not None and other != "":
                speedup = other / r["median_ms"]
                lines.append(f"- fwd+bwd {r['N']}x{r['D']}: {speedup:.2f}x {peer} (target >= {need}x: "
                             f"{'met' if speedup >= need else 'NOT met'})")  # fmt: skip
    floor = _ms(rows, step="floor", backend="empty-triton")
    host = [r["median_ms"] for r in rows if r["step"] == "runner" and r["backend"] == "triton"
            and r["method"] == "host" and r["direction"] == "forward" and r["median_ms"] != ""]  # fmt: skip
    if floor and host:
        worst = max(host) / floor
        lines.append(f"- host time per forward call at the runner's sizes, worst case: {worst:.2f}x the "
                     f"empty launch (target <= 1.5x: {'met' if worst <= 1.5 else 'NOT met'})")  # fmt: skip
    return lines


def summary(rows: list[dict], info: dict[str, str]) -> str:
    """The Markdown summary: conditions, the targets' verdicts, then each step's rows."""
    lines = ["# GPU session: reparameterize_kl", ""] + [f"- {k}: `{v}`" for k, v in info.items()]
    lines += targets(rows)
    for step in dict.fromkeys(r["step"] for r in rows):
        picked = [r for r in rows if r["step"] == step]
        keys = [k for k in FIELDS if k != "step" and any(r[k] != "" for r in picked)]
        lines += ["", f"## {step}", "", "| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
        for r in picked:
            cells = [f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV and summary")
    parser.add_argument("--smoke", action="store_true", help="CPU, interpreter, tiny sizes")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop measuring after this")
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    elif not torch.cuda.is_available():
        parser.error("no CUDA device: run with --smoke to check the script on the CPU")
    session = Session(args.out, args.smoke, args.budget_s)
    ok = session.kernel_tests()
    if ok:
        session.floor()
        bandwidth = ((4096, 16),) if args.smoke else ((1048576, 96), (262144, 384))
        for step in (session.runner_sizes, lambda: session.peers(bandwidth), lambda: session.variants(bandwidth),
                     session.end_to_end, session.modes):  # fmt: skip
            if session.left() > 5:
                step()
    text = summary(session.record.rows, conditions(session.device))
    atomic_write_text(args.out / "RESULTS-gpu.md", text)
    print(f"csv: {session.record.path}\nsummary: {args.out / 'RESULTS-gpu.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
