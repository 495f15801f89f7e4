"""Built-in sweep executors: ``local`` (a process pool) and ``ray`` (an existing engine).

Both hand back ``concurrent.futures`` futures, so the sweep loop is the same for either.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from vaebench.errors import ConfigError

PR_SET_PDEATHSIG = 1  # prctl(2)


def _init_worker(gpu_queue: Any, threads: int, parent: int) -> None:
    """Die with the sweep process (even a SIGKILL of it), pin a worker to one GPU (on
    multi-GPU machines) and share the CPU cores fairly."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())
    import torch

    torch.set_num_threads(threads)


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def local_executor(workers: int = 1, **options: Any) -> ProcessPoolExecutor:
    """A spawn-based process pool; with several GPUs, one worker per GPU."""
    context = multiprocessing.get_context("spawn")
    gpus = _visible_gpus()
    queue = None
    if gpus > 1:
        workers = min(workers, gpus)
        queue = context.Queue()
        for index in range(workers):
            queue.put(index)
    threads = max(1, (os.cpu_count() or 1) // workers)
    return LocalExecutor(
        workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(queue, threads, os.getpid()),
    )


class LocalExecutor(ProcessPoolExecutor):
    """A process pool whose ``shutdown(wait=False, cancel_futures=True)`` (what an interrupted
    sweep calls) also stops the running cells: they are re-run by ``--resume``."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures and not wait:
            for process in list((getattr(self, "_processes", None) or {}).values()):
                process.kill()
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


class RayExecutor:
    """Cells as Ray tasks (one GPU each where the cluster has GPUs)."""

    def __init__(self, workers: int = 1, address: str | None = None, **options: Any) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "--executor ray needs Ray: pip install 'vaebench[ray]' (or pip install ray)"
            ) from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": logging.WARNING,
            }
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = workers
            ray.init(**kwargs)
        self._gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        self._remote: dict[Any, Any] = {}

    def submit(self, fn, *args: Any) -> Future:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(num_gpus=self._gpus, num_cpus=1, max_retries=0)(fn)
        return self._remote[fn].remote(*args).future()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
