"""One command for the day a GPU is lent: the kernel's figures, most valuable first.

    python -m benchmarks.gpu_session --out DIR --max-seconds 540   # on the GPU machine
    python -m benchmarks.gpu_session --out DIR --smoke             # anywhere: same steps, tiny sizes

A lent GPU is rare and a device call has a hard limit, so the session is ordered by value and
each step has its own share of ``--max-seconds`` (time a step leaves unused goes to the next).
A step that fails or runs out of time records why and the next one starts; every figure is
appended to ``DIR/gpu_session.csv`` the moment it is measured, and ``DIR/RESULTS-gpu.md``
(conditions, the targets' verdicts, each step's rows) is rewritten after every step, so a
kill at any moment leaves a readable summary. Nothing is written outside ``DIR``: Triton's,
Inductor's, Hypothesis' and vaebench's caches and temporary files go to ``DIR/cache``.

Steps (``STEPS``), in order:

1. ``environment``: versions and device, the device-to-device copy bandwidth (the ceiling of
   a bandwidth-bound kernel) and the empty Triton launch (the floor of a small call);
2. ``correctness``: the CUDA-only kernel tests and the ``gpu_session`` selection of the
   kernel suite (no ``-x``: each test reports), and the measured agreement of fast-math
   Box-Muller with the exact one;
3. ``bandwidth``: the op and every benchmark variant (stored or recovered noise, philox4,
   fast math) at bandwidth-bound sizes, forward and forward + backward, against the copy
   bandwidth;
4. ``peers``: eager PyTorch and ``torch.compile`` (default, reduce-overhead) of the reference
   with the noise drawn inside, each compiled once per shape before timing (compile time is
   its own row);
5. ``training``: one ``vaebench run`` per kernel backend, and triton under CUDA graphs;
6. ``runner``: the runner's sizes (batch 64-4096, latent 16-512, samples 1/5/100) timed three
   ways: device time (CUDA events, L2 flushed), host wall time per call, CUDA-graph replay;
7. ``modes``: ``vaebench run --plugins conv,mlp --precision fp32,bf16,fp16 --compile
   none,default`` and again with ``--cuda-graphs``.

``--smoke`` runs the same steps in the same order on the CPU through Triton's interpreter with
tiny sizes (a test runs it): it proves the script, its figures are not timing claims. The
CUDA-only parts (fast math, graph replay) record that they need CUDA.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.reparam_kl import conditions, copy_bandwidth_gbs
from vaebench.io import atomic_write_text
from vaebench.kernels import reparameterize_kl, reparameterize_kl_reference
from vaebench.schema import row_label
from vaebench.timing import time_call

REPO = Path(__file__).resolve().parent.parent
FIELDS = (
    "step", "backend", "direction", "method", "N", "D", "samples", "log_q", "dtype",
    "median_ms", "low_ms", "high_ms", "GB_per_s", "fraction_of_copy_bw", "peak_mem_MB", "note",
)  # fmt: skip
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# The kernel suite the correctness step draws from; it runs the tests marked ``cuda`` or
# ``gpu_session`` in these files (a test reads this tuple to check their devices).
KERNEL_TESTS = (
    "tests/test_kernels_triton.py",
    "tests/test_kernels_op.py",
    "tests/test_properties.py",
)
SELECTION = "cuda or gpu_session"
BANDWIDTH_SIZES = ((1048576, 96), (262144, 384))  # ~1e8 elements: bandwidth-bound
SMOKE_SIZES = ((4096, 16),)
VARIANTS = (
    ("triton", {}),
    ("triton-store-noise", {"noise": "store"}),
    ("triton-recover-noise", {"noise": "recover"}),
    ("triton-philox4", {"rng": "philox4"}),
    ("triton-fast-math", {"fast_math": True}),
    ("triton-philox4-fast-math", {"rng": "philox4", "fast_math": True}),
)


@dataclass(frozen=True)
class Step:
    name: str
    share: float  # of the session's time, before what earlier steps leave unused
    what: str


STEPS = (
    Step("environment", 0.04, "versions, copy bandwidth, empty-launch floor"),
    Step("correctness", 0.26, "CUDA-only tests and the gpu_session selection; fast-math agreement"),
    Step("bandwidth", 0.14, "the op and every variant at bandwidth-bound sizes"),
    Step("peers", 0.14, "eager and torch.compile, compiled once per shape"),
    Step("training", 0.14, "vaebench run per kernel backend, and under CUDA graphs"),
    Step("runner", 0.10, "the runner's sizes: device, host and graph-replay time"),
    Step("modes", 0.18, "precision x compile x CUDA graphs, conv and mlp"),
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


def private_environment(out: Path) -> dict[str, str]:
    """Environment variables that keep every cache and temporary file inside ``out``."""
    cache = out / "cache"
    places = {
        "TRITON_HOME": cache / "triton-home",
        "TRITON_CACHE_DIR": cache / "triton",
        "TORCHINDUCTOR_CACHE_DIR": cache / "inductor",
        "HYPOTHESIS_STORAGE_DIRECTORY": cache / "hypothesis",
        "VAEBENCH_CACHE": cache / "vaebench",
        "MPLCONFIGDIR": cache / "matplotlib",
        "XDG_CACHE_HOME": cache / "xdg",
        "TMPDIR": cache / "tmp",
    }
    for folder in places.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {**{k: str(v) for k, v in places.items()}, "PYTHONDONTWRITEBYTECODE": "1"}


class Session:
    def __init__(self, out: Path, smoke: bool, max_seconds: float) -> None:
        self.device = torch.device("cpu" if smoke else "cuda")
        self.smoke, self.out = smoke, out
        self.end = time.monotonic() + max_seconds
        self.step_end = self.end
        self.record = Recorder(out / "gpu_session.csv")
        self.copy_bw = float("nan")
        self.private = private_environment(out)
        self.env = {**os.environ, **self.private}
        if smoke:
            self.env["TRITON_INTERPRET"] = "1"
        else:
            self.env.pop("TRITON_INTERPRET", None)

    def left(self) -> float:
        """Seconds left to the current step (never beyond the session's end)."""
        return min(self.step_end, self.end) - time.monotonic()

    def run(self, steps: tuple[Step, ...] = STEPS) -> None:
        """Each step in order, within its share of what is left; the summary after each."""
        for index, step in enumerate(steps):
            remaining = self.end - time.monotonic()
            share = step.share / sum(s.share for s in steps[index:])
            self.step_end = time.monotonic() + max(0.0, remaining * share)
            started, before = time.monotonic(), len(self.record.rows)
            try:
                if remaining < 5:
                    raise TimeoutError("the session's time ran out before this step")
                getattr(self, step.name.replace("-", "_"))()
            except Exception as exc:  # one step failing must not stop the next
                self.record.add(step=step.name, note=f"FAILED: {type(exc).__name__}: {exc}"[:300])
            if len(self.record.rows) == before:
                self.record.add(step=step.name, note="no rows: the step's time ran out")
            self.record.add(
                step=step.name, backend="(step)", method="wall",
                median_ms=(time.monotonic() - started) * 1e3,
                note=f"budget {self.step_end - started:.0f} s",
            )  # fmt: skip
            self.write_summary()

    def write_summary(self) -> None:
        text = summary(self.record.rows, conditions(self.device))
        atomic_write_text(self.out / "RESULTS-gpu.md", text)

    # -- timing -----------------------------------------------------------------------------
    def device_ms(self, fn: Callable[[], object], rep_ms: int = 60) -> tuple[float, float, float]:
        if self.smoke:
            t = time_call(fn, batch_size=1, device=self.device, min_run_time=0.01)
            return t.median_s * 1e3, t.q25_s * 1e3, t.q75_s * 1e3
        from triton.testing import do_bench

        return tuple(do_bench(fn, warmup=15, rep=rep_ms, quantiles=[0.5, 0.2, 0.8]))

    def host_ms(self, fn: Callable[[], object], calls: int = 50) -> float:
        """Wall time per call of back-to-back calls: what the host pays per launch."""
        calls = 3 if self.smoke else calls
        for _ in range(3):
            fn()
        self.sync()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        self.sync()
        return (time.perf_counter() - start) * 1e3 / calls

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

    def measure(self, step: str, backend: str, call, n: int, d: int, samples: int, log_q: bool, dtype: str,
                methods=("device",)) -> None:  # fmt: skip
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

        def forward():
            with torch.no_grad():
                return call(mu, logvar, samples=samples, return_log_q=log_q)

        def forward_backward():
            outs = call(mu, logvar, samples=samples, return_log_q=log_q)
            return torch.autograd.grad(outs, (mu, logvar), grads)

        elem = torch.empty((), dtype=dt).element_size()
        moved = {"forward": (2 * n * d + samples * n * d) * elem + 4 * n * (1 + samples * log_q)}
        moved["fwd+bwd"] = (
            moved["forward"] + (4 * n * d + samples * n * d) * elem + 4 * n * (1 + samples * log_q)
        )
        where = {"step": step, "backend": backend, "N": n, "D": d, "samples": samples,
                 "log_q": log_q, "dtype": dtype}  # fmt: skip
        for direction, fn in (("forward", forward), ("fwd+bwd", forward_backward)):
            for method in methods:
                if self.left() < 2:
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
                except Exception as exc:  # one figure failing must not stop the step
                    self.record.add(**where, direction=direction, method=method,
                                    note=f"error: {type(exc).__name__}: {exc}"[:200])  # fmt: skip
                    continue
                gbs = moved[direction] / (median * 1e-3) / 1e9
                self.record.add(
                    **where, direction=direction, method=method, median_ms=median, low_ms=low,
                    high_ms=high, GB_per_s=gbs, fraction_of_copy_bw=gbs / self.copy_bw,
                    peak_mem_MB=self.peak_mb(fn) if method == "device" and direction == "fwd+bwd" else "",
                )  # fmt: skip

    def sizes(self) -> tuple[tuple[int, int], ...]:
        return SMOKE_SIZES if self.smoke else BANDWIDTH_SIZES

    def dtypes(self) -> tuple[str, ...]:
        return ("fp32",) if self.smoke else ("fp32", "bf16")

    # -- steps, in STEPS order ----------------------------------------------------------------
    def environment(self) -> None:
        import triton

        @triton.jit
        def empty(x_ptr):
            pass

        info = conditions(self.device)
        self.record.add(step="environment", backend="device", note=info["device"])
        self.record.add(step="environment", backend="versions",
                        note=f"torch {info['torch']}, triton {info['triton']}, cuda {info['cuda']}")  # fmt: skip
        self.copy_bw = copy_bandwidth_gbs(self.device)
        self.record.add(step="environment", backend="copy", method="device", GB_per_s=self.copy_bw)
        x = torch.empty(1, device=self.device)
        launch = functools.partial(empty[(1,)], x)
        self.record.add(
            step="environment", backend="empty-triton", method="host",
            median_ms=self.host_ms(launch),
        )  # fmt: skip

    def correctness(self) -> None:
        """The selection, one verbose line per test: if the step's time runs out, the tests
        that finished still count (read from the output so far), and the failures are named."""
        report = self.out / "correctness.xml"
        marks = SELECTION if not self.smoke else f"({SELECTION}) and not slow"
        command = [sys.executable, "-m", "pytest", *KERNEL_TESTS, "-v", "-m", marks,
                   "-p", "no:cacheprovider", f"--junitxml={report}", "--rootdir", str(REPO)]  # fmt: skip
        started = time.monotonic()
        try:
            done = subprocess.run(command, cwd=REPO, env=self.env, capture_output=True,
                                  text=True, timeout=max(10.0, self.left() - 30))  # fmt: skip
            output, tail = done.stdout, (done.stdout.strip().splitlines() or ["no output"])[-1]
        except subprocess.TimeoutExpired as exc:
            output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            tail = "timed out"
        counts, failures = read_junit(report)
        if not counts:  # no junit file: pytest was stopped; count its verbose lines
            counts, failures = read_verbose(output)
        self.record.add(
            step="correctness", backend="pytest", method="run",
            median_ms=(time.monotonic() - started) * 1e3,
            note=f"{counts} ({tail})" if tail != "timed out" else f"FAILED: timed out after {counts}",
        )  # fmt: skip
        for name, message in failures:
            self.record.add(
                step="correctness", backend="pytest", note=f"FAILED {name}: {message}"[:300]
            )
        self.fast_math_agreement()

    def fast_math_agreement(self) -> None:
        """max |fast - exact| over 1M normals from the same Philox integers, per generator."""
        if self.device.type != "cuda":
            self.record.add(
                step="correctness", backend="fast-math", note="needs CUDA (SFU sin/cos)"
            )
            return
        from benchmarks.kernel_variants import reparameterize_kl_variant

        zeros = torch.zeros(4096, 256, device=self.device)
        for rng in ("philox", "philox4"):
            exact = reparameterize_kl_variant(zeros, zeros, seed=77, rng=rng)[0].double()
            fast = reparameterize_kl_variant(zeros, zeros, seed=77, rng=rng, fast_math=True)[0]
            worst = (fast.double() - exact).abs().max().item()
            tails = exact.abs() > 4
            tail_worst = (fast.double() - exact).abs()[tails].max().item()
            self.record.add(
                step="correctness", backend=f"fast-math {rng}", N=4096, D=256,
                note=f"max |fast - exact| {worst:.2e} (|eps| > 4: {tail_worst:.2e}, "
                     f"{int(tails.sum())} values); non-finite {int((~torch.isfinite(fast)).sum())}",
            )  # fmt: skip

    def bandwidth(self) -> None:
        from benchmarks.kernel_variants import reparameterize_kl_variant

        for label, kwargs in VARIANTS:
            if kwargs.get("fast_math") and self.device.type != "cuda":
                self.record.add(step="bandwidth", backend=label, note="needs CUDA")
                continue
            call = functools.partial(reparameterize_kl_variant, **kwargs)
            for n, d in self.sizes():
                for dtype in self.dtypes():  # bf16 philox4 converts layouts: price it too
                    self.measure("bandwidth", label, call, n, d, 1, False, dtype)

    def peers(self) -> None:
        def reference_with_noise(mu, logvar, *, samples=1, return_log_q=False):
            shape = mu.shape if samples == 1 else (samples, *mu.shape)
            eps = torch.randn(shape, device=mu.device, dtype=torch.float32)
            return reparameterize_kl_reference(mu, logvar, eps, return_log_q=return_log_q)

        modes = ("default",) if self.smoke else ("default", "reduce-overhead")
        for n, d in self.sizes():
            for dtype in self.dtypes():
                self.measure("peers", "eager", reference_with_noise, n, d, 1, False, dtype)
                for mode in modes:
                    if self.left() < 10:
                        return
                    compiled = torch.compile(reference_with_noise, mode=mode, dynamic=False)
                    self.compile_once(f"compile-{mode}", compiled, n, d, dtype)
                    self.measure("peers", f"compile-{mode}", compiled, n, d, 1, False, dtype)

    def compile_once(self, label: str, compiled, n: int, d: int, dtype: str) -> None:
        """The first calls (forward, then forward + backward) compile: timed apart."""
        mu = torch.zeros(n, d, device=self.device, dtype=DTYPES[dtype], requires_grad=True)
        started = time.perf_counter()
        with torch.no_grad():
            compiled(mu, mu)
        z, kl = compiled(mu, mu)
        torch.autograd.grad(z.float().sum() + kl.sum(), mu)
        self.sync()
        self.record.add(step="peers", backend=label, method="compile", N=n, D=d, dtype=dtype,
                        median_ms=(time.perf_counter() - started) * 1e3,
                        note="compile time, forward and backward graphs")  # fmt: skip

    def training(self) -> None:
        options = ["-D", "n_train=256", "-D", "n_test=64", "--epochs", "1"] if self.smoke else \
            ["-D", "n_train=60000", "-D", "n_test=10000", "-D", "side=28", "--epochs", "1"]  # fmt: skip
        runs = [(kernel, ["--kernel", kernel]) for kernel in ("triton", "torch", "compile")]
        runs.append(("triton+cuda-graphs", ["--kernel", "triton", "--cuda-graphs"]))
        for label, extra in runs:
            if "--cuda-graphs" in extra and self.device.type != "cuda":
                self.record.add(step="training", backend=label, note="needs CUDA")
                continue
            args = ["--dataset", "synthetic", *options, *extra, "--iw-samples", "8"]
            folder = self.out / f"training-{label}"
            for row in self.vaebench_run("training", label, folder, args)[:1]:
                for phase in ("train", "encode", "decode"):
                    rate = row[f"{phase}_samples_per_s"]
                    self.record.add(step="training", backend=label, direction=phase, method="run",
                                    N=row["timing_batch_size"], D=row["latent_dim"], dtype="fp32",
                                    median_ms=1e3 * row["timing_batch_size"] / rate,
                                    note=f"{rate:,.0f} samples/s; train {row['train_seconds']:.1f} s/epoch")  # fmt: skip

    def runner(self) -> None:
        batches = (64,) if self.smoke else (64, 256, 1024, 4096)
        latents = (16, 20) if self.smoke else (16, 20, 50, 128, 512)
        shapes = ((1, False), (5, True)) if self.smoke else ((1, False), (5, True), (100, True))
        for dtype in self.dtypes():
            for samples, log_q in shapes:
                for n in batches:
                    for d in latents:
                        for backend in ("triton", "torch"):
                            call = functools.partial(reparameterize_kl, backend=backend)
                            methods = (
                                ("device", "host", "graph") if backend == "triton" else ("device",)
                            )
                            self.measure("runner", backend, call, n, d, samples, log_q, dtype, methods)  # fmt: skip

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
            for row in self.vaebench_run("modes", name, self.out / name, args):
                label = f"{name}: {row_label(row)}"
                if row["status"] != "ok":
                    self.record.add(step="modes", backend=label, note=row["status"][:200])
                    continue
                self.record.add(
                    step="modes", backend=label, direction="train", method="run",
                    N=row["timing_batch_size"], D=row["latent_dim"], dtype=row["precision"],
                    median_ms=1e3 * row["timing_batch_size"] / row["train_samples_per_s"],
                    peak_mem_MB=row.get("train_peak_mb") or "",
                    note=f"{_figure(row, 'train_samples_per_s', ',.0f')} samples/s; best batch "
                         f"{_figure(row, 'best_train_batch_size', 'd')}; dIW-NLL "
                         f"{_figure(row, 'delta_iw_nll_vs_fp32_eager', '+.3f')}; busy "
                         f"{_figure(row, 'train_device_busy', '.0%')}; compile "
                         f"{_figure(row, 'compile_seconds', '.0f')} s",
                )  # fmt: skip

    def vaebench_run(self, step: str, label: str, folder: Path, args: list[str]) -> list[dict]:
        """One ``vaebench run`` in a child process within the step's time; its rows, or []
        with the reason recorded."""
        command = [sys.executable, "-m", "vaebench", "run", *args, "--device", self.device.type,
                   "--timing-min-time", "0.05" if self.smoke else "0.3", "--out", str(folder),
                   "--overwrite", "--quiet"]  # fmt: skip
        if self.left() < 10:
            self.record.add(step=step, backend=label, note="skipped: the step's time ran out")
            return []
        try:
            done = subprocess.run(command, cwd=self.out, env=self.env, capture_output=True,
                                  text=True, timeout=self.left())  # fmt: skip
        except subprocess.TimeoutExpired:
            self.record.add(step=step, backend=label, note="timed out within the step's budget")
            return []
        if done.returncode != 0:
            self.record.add(step=step, backend=label, note=f"FAILED: {done.stderr.strip()[-200:]}")
            return []
        return json.loads((folder / "results.json").read_text())


def read_junit(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """``"N passed, M failed, K skipped"`` and each failure's test and first message line."""
    if not path.exists():
        return "", []
    suite = ET.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    failures = []
    for case in suite.iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            first = (bad.get("message") or "").splitlines()[:1]
            failures.append((case.get("name", "?"), first[0] if first else bad.tag))
    total, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    return f"{total - failed - skipped} passed, {failed} failed, {skipped} skipped", failures


def read_verbose(output: str) -> tuple[str, list[tuple[str, str]]]:
    """Counts and failed tests from ``pytest -v`` lines (``path::test[id] PASSED [ 5%]``)."""
    seen = {"PASSED": 0, "FAILED": 0, "ERROR": 0, "SKIPPED": 0}
    failures = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "::" in parts[0] and parts[1] in seen:
            seen[parts[1]] += 1
            if parts[1] in ("FAILED", "ERROR"):
                failures.append((parts[0].split("::", 1)[1], parts[1].lower()))
    failed = seen["FAILED"] + seen["ERROR"]
    return f"{seen['PASSED']} passed, {failed} failed, {seen['SKIPPED']} skipped", failures


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
    bw = [r for r in rows if r["step"] == "bandwidth" and r["backend"] == "triton"
          and r["dtype"] == "fp32" and r["median_ms"] != ""]  # fmt: skip
    for r in bw:
        verdict = "met" if r["fraction_of_copy_bw"] >= 0.85 else "NOT met"
        lines.append(f"- {r['direction']} {r['N']}x{r['D']} fp32 at >= 85% of copy bandwidth: "
                     f"{r['fraction_of_copy_bw']:.0%} ({verdict})")  # fmt: skip
    for r in (r for r in bw if r["direction"] == "fwd+bwd"):
        key = {"step": "peers", "direction": "fwd+bwd", "method": "device", "N": r["N"],
               "D": r["D"], "dtype": "fp32"}  # fmt: skip
        for peer, need in (("eager", 3.0), ("compile-default", 1.15)):
            other = _ms(rows, backend=peer, **key)
            if other is not None:
                speedup = other / r["median_ms"]
                lines.append(f"- fwd+bwd {r['N']}x{r['D']}: {speedup:.2f}x {peer} (target >= {need}x: "
                             f"{'met' if speedup >= need else 'NOT met'})")  # fmt: skip
    floor = _ms(rows, step="environment", backend="empty-triton")
    host = [r["median_ms"] for r in rows if r["step"] == "runner" and r["backend"] == "triton"
            and r["method"] == "host" and r["direction"] == "forward" and r["median_ms"] != ""]  # fmt: skip
    if floor and host:
        worst = max(host) / floor
        lines.append(f"- host time per forward call at the runner's sizes, worst case: {worst:.2f}x the "
                     f"empty launch (target <= 1.5x: {'met' if worst <= 1.5 else 'NOT met'})")  # fmt: skip
    if len(lines) == 3:
        lines.append("- undecided: no bandwidth or runner figures yet")
    return lines


def summary(rows: list[dict], info: dict[str, str]) -> str:
    """The Markdown summary: conditions, the targets' verdicts, then each step's rows."""
    lines = ["# GPU session: reparameterize_kl", ""] + [f"- {k}: `{v}`" for k, v in info.items()]
    if "smoke" in info.get("command", ""):
        lines += ["", "**Smoke run** (CPU, Triton interpreter, tiny sizes): it proves the "
                  "script; none of its figures is a timing claim."]  # fmt: skip
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
    parser.add_argument("--out", type=Path, required=True, help="folder for everything written")
    parser.add_argument("--smoke", action="store_true", help="CPU, interpreter, tiny sizes")
    parser.add_argument(
        "--max-seconds", type=float, default=540.0,
        help="the whole session's time (a device call's limit less a margin); shared by step",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --smoke to check the script on the CPU")
    if args.max_seconds <= 0:
        parser.error(f"--max-seconds must be positive, got {args.max_seconds:g}")
    session = Session(args.out, args.smoke, args.max_seconds)
    os.environ.update(session.private)  # this process's caches too
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    tempfile.tempdir = None  # TMPDIR now points inside --out
    session.run()
    print(f"csv: {session.record.path}\nsummary: {args.out / 'RESULTS-gpu.md'}")
    failed = [r for r in session.record.rows if r["note"].startswith("FAILED")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
