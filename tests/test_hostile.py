"""Hostile input: every case runs the real CLI and checks the same things.

An error case asserts the exit code; a stderr of exactly one non-empty line that starts with
``vaebench: error: `` (``vaebench: warning: `` where the contract says so) and names the
culprit (flag, key, file or field); no ``Traceback`` on stdout or stderr; and that no file
that existed before the command was changed or lost (sha256 snapshots of the folders involved).

Where: most cases call the CLI's entry function, ``vaebench.cli.main(argv)``, in this process
(the ``vaebench_cli`` fixture: its exit code, stdout and stderr, warnings included; the
environment and working directory set for the call). Five stay true subprocesses
(``python -m vaebench``), for what only a fresh process shows:

- ``TestSignals`` (3): SIGKILL of a sweep's parent and its workers, SIGINT / SIGTERM of a run;
- ``TestMisbehavingPlugins`` ``exit-at-import`` (2, lenient and strict): a third-party
  distribution found through its entry point on ``PYTHONPATH`` by a fresh interpreter, whose
  module calls ``sys.exit`` as it is imported.

(``--help`` start-up without torch and a plugin that trains end to end from a subprocess are
tested in ``test_schema_config.py`` and ``test_registry.py``.) Marked slow, outside the default
run: ``TestSignals``, the two runs with a broken cache (they train the sample-metrics
classifier) and the run on one example.

Classes, cases (67 in all; the command each one runs):

- ``TestDataLoss`` (9, run): an --out that holds a run (3 ways) is refused unless --overwrite;
  --overwrite clears the old folder; an empty folder is fine; a run refused for bad input
  leaves the old run untouched even with --overwrite (4).
- ``TestPaths`` (8: run 3 (--out a file, under a file, under a read-only folder: skipped as
  root), sweep 1, report 2, run with a broken $VAEBENCH_CACHE 2).
- ``TestSweepFile`` (11, sweep --dry-run): bad values, keys, tables and files.
- ``TestUnreadOptions`` (6, run): -P/-L/-D options nobody reads or that are out of range.
- ``TestLyingFiles`` (9, run --dataset PATH): .npz and IDX files whose contents lie.
- ``TestSizes`` (2, run): sizes that would need terabytes.
- ``TestMisbehavingPlugins`` (6, plugins): sys.exit / SystemExit / BaseException in a plugin,
  with and without VAEBENCH_STRICT_PLUGINS=1.
- ``TestDamagedFolders`` (13: report 7, compare 6): one damaged file in a copy of a finished run.
- ``TestSignals`` (3: sweep 1, run 2): SIGKILL of a sweep's parent leaves no worker and
  --resume re-runs only the unfinished cell; SIGINT / SIGTERM during a run -> 130 / 143.

Per command: run 33, sweep 13, report 9, compare 6, plugins 6 (the shared finished run that
the report, compare and data-loss cases copy is made once per module, in-process).

Two slow cells are made slow on purpose and on demand: the ``sleepy`` model (a test plugin
installed through a real entry point) waits in its loss while a flag file exists, so the
signal tests interrupt a run whose first model is finished and whose second is training,
and a killed sweep's unfinished cell finishes at once on --resume once the flag is removed.

Cases that might allocate a lot run under an address-space limit (RLIMIT_AS: this process's
address space plus 16 GiB, lifted afterwards) and a 60 s alarm: an attempt at a terabyte
allocation fails fast instead of taking the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import FAST_CLI, run_cli, write_distribution
from vaebench.cli import main

ERROR = "vaebench: error: "
WARNING = "vaebench: warning: "
# FAST_CLI without the synthetic dataset, for runs on a data file.
FAST_FILE_CLI = ("--epochs", "2", "--iw-samples", "4", "--timing-min-time", "0.01")
MEMORY_CAP = 16 * 2**30  # address space a case that might try a huge allocation may add


# -- helpers -------------------------------------------------------------------------------

# What a command gave: a ``subprocess.CompletedProcess`` or the in-process ``helpers.Result``
# (returncode, stdout, stderr either way).
Done = Any


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file under ``root`` (or of ``root`` itself)."""
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    if not root.is_dir():
        return {}
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def assert_kept(before: dict[str, str], root: Path) -> None:
    """Every file of ``before`` is still under ``root``, byte for byte (new files are allowed)."""
    after = snapshot(root)
    lost = sorted(set(before) - set(after))
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    assert not lost and not changed, f"{root}: lost {lost}, changed {changed}"


def show(done: Done) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-1500:]}\n--- stderr\n{done.stderr[-3000:]}"


def assert_no_traceback(done: Done) -> None:
    assert "Traceback" not in done.stdout + done.stderr, show(done)


def one_line(done: Done, prefix: str) -> str:
    """The single non-empty stderr line, which must start with ``prefix``."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}\n{show(done)}"
    assert lines[0].startswith(prefix), f"expected '{prefix}...'\n{show(done)}"
    return lines[0]


def assert_names(line: str, *needles: str | tuple[str, ...]) -> None:
    """Each needle occurs in ``line``; a tuple of needles means any one of them."""
    for needle in needles:
        options = needle if isinstance(needle, tuple) else (needle,)
        assert any(n in line for n in options), f"{' or '.join(options)!r} not in: {line}"


def assert_refused(
    done: Done,
    *needles: str | tuple[str, ...],
    code: int = 2,
    prefix: str = ERROR,
) -> str:
    assert_no_traceback(done)
    assert done.returncode == code, f"expected exit {code}\n{show(done)}"
    line = one_line(done, prefix)
    assert_names(line, *needles)
    return line


class TookTooLong(BaseException):
    """Raised by the alarm: a BaseException, so no ``except Exception`` on the way swallows it."""


@contextlib.contextmanager
def limited(timeout: float = 60):
    """At most ``MEMORY_CAP`` more address space (RLIMIT_AS) and ``timeout`` seconds.

    A terabyte allocation fails at once instead of taking the machine, and a case that hangs
    fails (SIGALRM) instead of hanging the suite; both are lifted on the way out.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmSize:")
    )
    cap = used + MEMORY_CAP if hard == resource.RLIM_INFINITY else min(hard, used + MEMORY_CAP)

    def alarm(signum, frame):
        raise TookTooLong

    previous = signal.signal(signal.SIGALRM, alarm)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.setitimer(signal.ITIMER_REAL, timeout)
    started = time.monotonic()
    try:
        yield
    except TookTooLong:
        pytest.fail(f"did not finish within {timeout} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert time.monotonic() - started < timeout, f"did not finish within {timeout} s"


@pytest.fixture
def cli_limited(vaebench_cli):
    """``vaebench_cli`` under ``limited``: for cases that might allocate a lot or hang."""

    def call(*args: str, timeout: float = 60, **kwargs) -> Done:
        with limited(timeout):
            return vaebench_cli(*args, **kwargs)

    return call


STRICT = "VAEBENCH_STRICT_PLUGINS"


def with_path(root: Path) -> dict[str, str]:
    """Environment that puts ``root`` (a folder of fake installed distributions) on sys.path."""
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths), STRICT: ""}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished run (mlp, synthetic, 2 epochs); tests copy it, never touch it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", "--plugins", "mlp", *FAST_CLI, "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    return copy


# -- 1. data loss ----------------------------------------------------------------------------


class TestDataLoss:
    @pytest.mark.parametrize("holds", ["finished-run", "config-only", "results-only"])
    def test_out_holding_a_run_is_refused(self, finished_run, tmp_path, holds, vaebench_cli):
        out = tmp_path / "old"
        if holds == "finished-run":
            shutil.copytree(finished_run, out)
        else:
            out.mkdir()
            name = "config.json" if holds == "config-only" else "results.json"
            shutil.copy(finished_run / name, out / name)
        before = snapshot(out)
        done = vaebench_cli("run", "--plugins", "mlp", *FAST_CLI, "--out", str(out), "--quiet")
        assert_refused(done, str(out), "--overwrite", "--out")
        assert_kept(before, out)

    def test_overwrite_clears_the_old_run(self, run_copy, vaebench_cli):
        planted = run_copy / "checkpoints" / "old.pt"
        planted.write_bytes(b"the old run's checkpoint")
        done = vaebench_cli(
            "run", "--plugins", "mlp", *FAST_CLI, "--seed", "1", "--out", str(run_copy),
            "--overwrite", "--quiet",
        )  # fmt: skip
        assert_no_traceback(done)
        assert done.returncode == 0, show(done)
        assert not planted.exists(), "--overwrite kept the old run's checkpoints/old.pt"
        rows = json.loads((run_copy / "results.json").read_text())
        assert [(r["plugin"], r["status"], r["seed"]) for r in rows] == [("mlp", "ok", 1)]
        assert json.loads((run_copy / "config.json").read_text())["seed"] == 1

    def test_existing_empty_folder_is_fine(self, tmp_path, vaebench_cli):
        out = tmp_path / "empty"
        out.mkdir()
        done = vaebench_cli("run", "--plugins", "mlp", *FAST_CLI, "--out", str(out), "--quiet")
        assert_no_traceback(done)
        assert done.returncode == 0, show(done)
        assert (out / "results.json").is_file() and (out / "results.csv").is_file()

    @pytest.mark.parametrize(
        "bad",
        [
            pytest.param(("--epochs", "0"), id="bad-epochs"),
            pytest.param(("--plugins", "nosuch"), id="unknown-plugin"),
            pytest.param(("--prior", "mog", "-P", "componets=5"), id="misspelt-prior-option"),
            pytest.param(("--dataset", "MISSING"), id="missing-data-file"),
        ],
    )
    def test_refused_overwrite_leaves_the_finished_run(self, run_copy, tmp_path, bad, vaebench_cli):
        culprit = {"--epochs": "--epochs", "--plugins": "nosuch", "--prior": "componets"}
        if bad[0] == "--dataset":
            missing = tmp_path / "missing.npz"
            args, needle = (*FAST_FILE_CLI, "--dataset", str(missing)), str(missing)
        else:
            args, needle = (*FAST_CLI, *bad), culprit[bad[0]]
        before = snapshot(run_copy)
        done = vaebench_cli(
            "run", "--plugins", "mlp", *args, "--out", str(run_copy), "--overwrite", "--quiet"
        )
        assert_refused(done, needle)
        assert_kept(before, run_copy)


# -- 2. paths --------------------------------------------------------------------------------


SMALL_SWEEP = """\
[fixed]
plugins = "mlp"
dataset = "synthetic"
dataset_options = { n_train = 64, n_test = 16 }
epochs = 2
iw_samples = 4
timing_min_time = 0.01
"""


class TestPaths:
    def test_run_out_is_a_regular_file(self, tmp_path, vaebench_cli):
        target = tmp_path / "notes.txt"
        target.write_text("precious\n")
        done = vaebench_cli("run", "--plugins", "mlp", *FAST_CLI, "--out", str(target), "--quiet")
        assert_refused(done, str(target))
        assert target.read_text() == "precious\n"

    def test_run_out_under_a_regular_file(self, tmp_path, vaebench_cli):
        target = tmp_path / "notes.txt"
        target.write_text("precious\n")
        out = target / "run"
        done = vaebench_cli("run", "--plugins", "mlp", *FAST_CLI, "--out", str(out), "--quiet")
        assert_refused(done, str(target))
        assert target.read_text() == "precious\n"

    @pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
    def test_run_out_under_a_read_only_folder(self, tmp_path, vaebench_cli):
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            out = locked / "run"
            done = vaebench_cli("run", "--plugins", "mlp", *FAST_CLI, "--out", str(out), "--quiet")
            assert_refused(done, str(locked))
            assert not out.exists()
        finally:
            locked.chmod(0o755)

    def test_sweep_out_is_a_regular_file(self, tmp_path, vaebench_cli):
        sweep = tmp_path / "sweep.toml"
        sweep.write_text(SMALL_SWEEP)
        target = tmp_path / "out.txt"
        target.write_text("precious\n")
        before = snapshot(tmp_path)
        done = vaebench_cli("sweep", str(sweep), "--out", str(target), "--quiet")
        assert_refused(done, str(target))
        assert_kept(before, tmp_path)

    def test_report_output_is_a_folder(self, run_copy, tmp_path, vaebench_cli):
        target = tmp_path / "reports"
        target.mkdir()
        (target / "keep.txt").write_text("precious\n")
        before_run, before_out = snapshot(run_copy), snapshot(target)
        done = vaebench_cli("report", str(run_copy), "-o", str(target))
        assert_refused(done, str(target))
        assert_kept(before_run, run_copy)
        assert_kept(before_out, target)

    def test_report_output_under_a_regular_file(self, run_copy, tmp_path, vaebench_cli):
        blocker = tmp_path / "some_file"
        blocker.write_text("precious\n")
        before = snapshot(run_copy)
        done = vaebench_cli("report", str(run_copy), "-o", str(blocker / "report.html"))
        assert_refused(done, str(blocker))
        assert blocker.read_text() == "precious\n"
        assert_kept(before, run_copy)

    @pytest.mark.slow
    @pytest.mark.parametrize("where", ["is-a-file", "under-a-file"])
    def test_unusable_cache_warns_and_the_run_succeeds(self, tmp_path, where, vaebench_cli):
        blocker = tmp_path / "cache-file"
        blocker.write_text("not a folder\n")
        cache = blocker if where == "is-a-file" else blocker / "vaebench"
        out = tmp_path / "run"
        done = vaebench_cli(
            "run", "--plugins", "mlp", *FAST_CLI, "--out", str(out), "--quiet",
            env={"VAEBENCH_CACHE": str(cache)},
        )  # fmt: skip
        assert_refused(done, str(cache), code=0, prefix=WARNING)
        assert blocker.read_text() == "not a folder\n"
        assert json.loads((out / "results.json").read_text())[0]["status"] == "ok"


# -- 3. sweep files ---------------------------------------------------------------------------


SWEEP_CASES = [
    pytest.param(b"[fixed]\nepochs = 2.5\n", "epochs", id="epochs-fraction"),
    pytest.param(b"[fixed]\nepochs = -1\n", "epochs", id="epochs-negative"),
    pytest.param(b"[fixed]\nseed = -1\n", "seed", id="seed-negative"),
    pytest.param(b"[fixed]\ntiming_min_time = inf\n", "timing_min_time", id="timing-inf"),
    pytest.param(b'[fixed]\nepochs = "ten"\n', "epochs", id="epochs-text"),
    pytest.param(b"[axes]\nepochs = [1, 0]\n", "epochs", id="axis-value-zero"),
    pytest.param(b"[fixed]\nepoks = 2\n", "epoks", id="unknown-key"),
    pytest.param(b"fixed = 3\n", "fixed", id="fixed-not-a-table"),
    pytest.param(b'[fixed]\nplugins = ["mlp", 3]\n', "plugins", id="list-with-a-number"),
    pytest.param(b"[fixed]\nepochs = 2\n# caf\xe9 \xff\xfe\n", None, id="not-utf8"),
    pytest.param(None, None, id="missing-file"),
]


class TestSweepFile:
    @pytest.mark.parametrize(("content", "key"), SWEEP_CASES)
    def test_bad_sweep_file_is_one_line(self, tmp_path, content, key, vaebench_cli):
        path = tmp_path / "sweep.toml"
        if content is not None:
            path.write_bytes(content)
        before = snapshot(tmp_path)
        done = vaebench_cli("sweep", str(path), "--dry-run", cwd=tmp_path)
        assert_refused(done, key or str(path))
        assert snapshot(tmp_path) == before, "a dry run wrote files"


# -- 4. options nobody reads -------------------------------------------------------------------


class TestUnreadOptions:
    @pytest.mark.parametrize(
        ("extra", "needles"),
        [
            pytest.param(
                ("--prior", "mog", "-P", "componets=5"),
                ("componets", "components"),
                id="mog-misspelt-components",
            ),
            pytest.param(
                ("--prior", "mog", "-P", "components=0"), ("components",), id="mog-components-0"
            ),
            pytest.param(
                ("--likelihood", "gaussian", "-L", "sigma=nan"), ("sigma",), id="gaussian-sigma-nan"
            ),
            pytest.param(
                ("--likelihood", "gaussian", "-L", "colour=1"), ("colour",), id="gaussian-colour"
            ),
            pytest.param(("-D", "nope=1"), ("nope",), id="synthetic-unknown-option"),
            pytest.param(
                ("--prior", "vamp", "-P", "pseudo_inputs=-1"),
                ("pseudo_inputs",),
                id="vamp-negative-pseudo-inputs",
            ),
        ],
    )
    def test_option_is_refused_before_training(self, tmp_path, extra, needles, vaebench_cli):
        out = tmp_path / "run"
        done = vaebench_cli(
            "run", "--plugins", "mlp", *FAST_CLI, *extra, "--out", str(out), "--quiet"
        )
        assert_refused(done, *needles)
        assert not out.exists(), "a refused run created its run folder"


# -- 5. files that lie --------------------------------------------------------------------------


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, 8, 8)).astype(np.float32)


def _npy_header_only(shape: tuple[int, ...]) -> bytes:
    """A .npy whose header declares ``shape`` (float64) followed by a few bytes of data."""
    buffer = io.BytesIO()  # the header writer also writes the magic string
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(b"\0" * 64)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _idx(array: np.ndarray) -> bytes:
    return (
        struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.astype(np.uint8).tobytes()
    )


def make_lying_file(kind: str, root: Path) -> tuple[Path, str]:
    """The data path to pass to --dataset, and the file the message must name."""
    npz = root / f"{kind}.npz"
    x_train, x_test = _images(32), _images(8)
    labels = np.arange(32) % 4, np.arange(8) % 4
    if kind == "npz-object-array":
        np.savez(npz, x=np.array([{"a": 1}], dtype=object))
    elif kind == "npz-negative-labels":
        np.savez(npz, x_train=x_train, x_test=x_test, y_train=labels[0] - 1, y_test=labels[1])
    elif kind == "npz-huge-labels":
        y_train = labels[0].astype(np.int64)
        y_train[0] = 2**40
        np.savez(npz, x_train=x_train, x_test=x_test, y_train=y_train, y_test=labels[1])
    elif kind == "npz-terabyte-header":
        with zipfile.ZipFile(npz, "w") as archive:
            archive.writestr("x_train.npy", _npy_header_only((10**7, 10**6)))
            archive.writestr("x_test.npy", _npy(x_test))
    elif kind == "npz-single-example":
        np.savez(npz, x=_images(1))
    elif kind == "npz-empty-valid":
        np.savez(npz, x_train=x_train, x_valid=_images(0), x_test=x_test)
        return npz, "x_valid"
    elif kind == "npz-valid-shape":
        np.savez(npz, x_train=x_train, x_valid=_images(4)[:, :, :5], x_test=x_test)
        return npz, "valid"
    else:  # an IDX folder
        folder = root / kind
        folder.mkdir()
        train, test = (_images(20) * 255).astype(np.uint8), (_images(5) * 255).astype(np.uint8)
        (folder / "t10k-images-idx3-ubyte").write_bytes(_idx(test))
        if kind == "idx-huge-header":
            bad = folder / "train-images-idx3-ubyte"
            bad.write_bytes(
                struct.pack(">BBBB3I", 0, 0, 0x08, 3, 4_000_000_000, 28, 28) + b"\0" * 64
            )
        elif kind == "idx-corrupt-gzip":
            bad = folder / "train-images-idx3-ubyte.gz"
            bad.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"not deflate data" * 4)
        elif kind == "idx-label-count":
            (folder / "train-images-idx3-ubyte").write_bytes(_idx(train))
            (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.arange(5) % 4))
            bad = folder / "train-labels-idx1-ubyte"
            bad.write_bytes(_idx(np.arange(19) % 4))
        else:
            raise AssertionError(kind)
        return folder, str(bad)
    return npz, str(npz)


LYING_FILES = [
    "npz-object-array",
    "npz-negative-labels",
    "npz-huge-labels",
    "npz-terabyte-header",
    "npz-single-example",
    "npz-empty-valid",
    "npz-valid-shape",
    "idx-huge-header",
    "idx-corrupt-gzip",
    "idx-label-count",
]


class TestLyingFiles:
    @pytest.mark.parametrize("kind", LYING_FILES)
    def test_lying_file_is_refused_quickly(self, tmp_path, kind, cli_limited):
        data, culprit = make_lying_file(kind, tmp_path)
        before = snapshot(data)
        started = time.monotonic()
        done = cli_limited(
            "run", "--plugins", "mlp", *FAST_FILE_CLI, "--dataset", str(data), "--device", "cpu",
            "--out", str(tmp_path / "run"), "--quiet",
        )  # fmt: skip
        assert_refused(done, culprit)
        assert time.monotonic() - started < 60
        assert_kept(before, data)

    @pytest.mark.slow
    def test_one_train_and_one_test_example(self, tmp_path, cli_limited):
        data = tmp_path / "tiny.npz"
        np.savez(
            data, x_train=_images(1), x_test=_images(1), y_train=np.array([0]), y_test=np.array([0])
        )
        done = cli_limited(
            "run", "--plugins", "mlp", *FAST_FILE_CLI, "--dataset", str(data), "--device", "cpu",
            "--out", str(tmp_path / "run"), "--quiet", timeout=120,
        )  # fmt: skip
        assert_no_traceback(done)
        assert done.returncode in (0, 1, 2), show(done)
        if done.returncode == 2:
            assert_names(one_line(done, ERROR), str(data))


# -- 6. sizes ------------------------------------------------------------------------------------


class TestSizes:
    def test_huge_latent_dim(self, tmp_path, cli_limited):
        out = tmp_path / "run"
        done = cli_limited(
            "run", "--plugins", "mlp", *FAST_CLI, "--latent-dim", "1000000000",
            "--device", "cpu", "--out", str(out), "--quiet",
        )  # fmt: skip
        assert_no_traceback(done)
        assert done.returncode in (1, 2), show(done)
        if done.returncode == 2:
            assert_names(one_line(done, ERROR), ("latent", "memory"))
        else:  # the model failed alone, with a status saying why
            assert "memory" in one_line(done, "vaebench: ").lower(), show(done)

    def test_huge_synthetic_dataset(self, tmp_path, cli_limited):
        done = cli_limited(
            "run", "--plugins", "mlp", *FAST_CLI, "-D", "n_train=1000000000000",
            "--device", "cpu", "--out", str(tmp_path / "run"), "--quiet",
        )  # fmt: skip
        assert_refused(done, ("n_train", "memory"))


# -- 7. misbehaving plugins ------------------------------------------------------------------------


ROGUE_PLUGINS = {
    "exit-at-import": "import sys\nsys.exit(3)\n",
    "systemexit-in-hook": """
        import vaebench

        @vaebench.hookimpl
        def vaebench_register_priors(register):
            register("rogue", "vaebench.plugins.priors:StandardNormalPrior")
            raise SystemExit("the plugin quit")
    """,
    "baseexception-at-import": """
        class Boom(BaseException):
            pass

        raise Boom("boom")
    """,
}


class TestMisbehavingPlugins:
    @pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
    @pytest.mark.parametrize("behaviour", list(ROGUE_PLUGINS))
    def test_plugin_that_exits_or_raises_baseexception(
        self, tmp_path, behaviour, strict, vaebench_cli, monkeypatch
    ):
        module = "vaebench_rogue_" + behaviour.replace("-", "_")
        root = write_distribution(
            tmp_path / "site", "vaebench-rogue", "6.6.6", module, ROGUE_PLUGINS[behaviour],
            {"rogue": module},
        )  # fmt: skip
        env = with_path(root)
        if strict:
            env["VAEBENCH_STRICT_PLUGINS"] = "1"
        if behaviour == "exit-at-import":  # a fresh interpreter finds it through PYTHONPATH
            done = run_cli("plugins", env_extra=env)
        else:  # this process finds it on sys.path, and forgets the module afterwards
            monkeypatch.syspath_prepend(str(root))
            try:
                done = vaebench_cli("plugins", env={"VAEBENCH_STRICT_PLUGINS": env[STRICT]})
            finally:
                sys.modules.pop(module, None)
        if strict:
            assert_refused(done, "vaebench-rogue")
            return
        assert_refused(done, "vaebench-rogue", code=0, prefix=WARNING)
        for builtin in ("mlp", "conv", "normal", "digits", "synthetic", "local"):
            assert builtin in done.stdout, show(done)
        assert "rogue" not in done.stdout.replace("vaebench-rogue", ""), "half-registered plugin"


# -- 7b. protocol: tasks, splits, layout and binarization ------------------------------------


def _amat(path: Path, rows: int, width: int = 784) -> None:
    rng = np.random.default_rng(0)
    path.write_text(
        "".join(" ".join(map(str, r)) + "\n" for r in rng.integers(0, 2, (rows, width)))
    )


def _static_mnist(root: Path) -> Path:
    for split, n in (("train", 8), ("valid", 4), ("test", 4)):
        _amat(root / f"binarized_mnist_{split}.amat", n)
    return root


class TestProtocolInput:
    """--task, --data-root, -D layout, --binarize and hold-outs given nonsense."""

    def test_task_data_root_without_the_files(self, tmp_path, cli_limited):
        (tmp_path / "unrelated.txt").write_text("keep me")
        before = snapshot(tmp_path)
        done = cli_limited("run", "--task", "static-mnist", "--data-root", str(tmp_path), "-q")
        assert_refused(
            done, "binarized_mnist_train.amat", "larocheh", "vaebench data fetch static-mnist"
        )
        assert_kept(before, tmp_path)

    def test_task_data_root_is_a_file(self, tmp_path, cli_limited):
        root = tmp_path / "root.txt"
        root.write_text("not a folder")
        done = cli_limited("run", "--task", "omniglot", "--data-root", str(root), "-q")
        assert_refused(done, "chardata.mat", str(root))

    def test_task_file_with_a_broken_line(self, tmp_path, cli_limited):
        _static_mnist(tmp_path)
        bad = tmp_path / "binarized_mnist_valid.amat"
        lines = bad.read_text().splitlines()
        lines[2] = lines[2][:-2]  # 783 values
        bad.write_text("\n".join(lines) + "\n")
        done = cli_limited(
            "run", "--task", "static-mnist", "--data-root", str(tmp_path), *FAST_FILE_CLI,
            "--out", str(tmp_path / "run"), "-q",
        )  # fmt: skip
        assert_refused(done, str(bad), "3")
        assert not (tmp_path / "run").exists()

    @pytest.mark.parametrize(
        "args, needle",
        [
            (["--task", "static-mnist!"], "unknown task 'static-mnist!'"),
            (["--task", "static-mnist", "--dataset", "digits"], "drop --dataset"),
            (["--task", "static-mnist", "-D", "layout=nhwc"], "drop --dataset-option"),
            (["--patience", "-1"], "--patience"),
            (["--valid-fraction", "1"], "--valid-fraction"),
            (["--binarize", "sometimes"], "--binarize"),
        ],
    )
    def test_bad_protocol_flags(self, tmp_path, args, needle, cli_limited):
        done = cli_limited("run", *args, "--data-root", str(tmp_path), "-q")
        assert_refused(done, needle)

    @pytest.mark.parametrize(
        "kind, args, needle",
        [
            ("rgb", ["-D", "layout=sideways"], "layout"),
            ("rgb", ["-D", "n_train=3"], "-D n_train"),
            ("real", ["--binarize", "static"], "--binarize static"),
            ("two", [], "cannot hold out"),
        ],
    )
    def test_bad_data_for_the_protocol(self, tmp_path, kind, args, needle, cli_limited):
        data = tmp_path / f"{kind}.npz"
        rng = np.random.default_rng(0)
        if kind == "rgb":
            np.savez(data, x_train=rng.random((8, 4, 4, 3)), x_test=rng.random((4, 4, 4, 3)))
        elif kind == "real":
            np.savez(data, x_train=rng.normal(size=(8, 5)), x_test=rng.normal(size=(4, 5)))
        else:
            np.savez(data, x_train=rng.random((2, 5)), x_test=rng.random((4, 5)))
        before = snapshot(tmp_path)
        done = cli_limited(
            "run", "--dataset", str(data), *args, *FAST_FILE_CLI,
            "--out", str(tmp_path / "run"), "-q",
        )  # fmt: skip
        assert_refused(done, needle)
        assert_kept(before, tmp_path)

    @pytest.mark.parametrize(
        "task",
        [
            {"references": "not a list"},
            {"references": [{"model": "x"}]},
            {
                "references": [
                    {"model": "x", "architecture": "", "metric": "fid", "value": 1, "source": ""}
                ]
            },
            {
                "references": [
                    {
                        "model": "x",
                        "architecture": "",
                        "metric": "bpd",
                        "value": "2.9",
                        "source": "",
                    }
                ]
            },
        ],
        ids=["not-a-list", "missing-fields", "unknown-metric", "text-value"],
    )
    def test_report_on_a_run_with_a_damaged_task_file(self, run_copy, task, vaebench_cli):
        (run_copy / "task.json").write_text(json.dumps(task))
        before = snapshot(run_copy)
        done = vaebench_cli("report", str(run_copy))
        assert_refused(done, str(run_copy / "task.json"))
        assert_kept(before, run_copy)


# -- 8. damaged folders ------------------------------------------------------------------------------


def _edit_json(path: Path, edit) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _set_first_row(key: str, value):
    def edit(rows):
        rows[0][key] = value
        return rows

    return edit


MATHTEXT = "$\\foo$"


def _rename_plugin(run: Path) -> None:
    _edit_json(run / "results.json", _set_first_row("plugin", MATHTEXT))
    _edit_json(
        run / "history.json",
        lambda h: {k.replace(":mlp/", f":{MATHTEXT}/"): v for k, v in h.items()},
    )


DAMAGES = {  # name -> (damage, file the message names, field it names or None)
    "config-is-a-list": (
        lambda run: (run / "config.json").write_text('["not", "a", "dict"]'),
        "config.json",
        None,
    ),
    "history-is-a-list": (
        lambda run: (run / "history.json").write_text("[1, 2, 3]"),
        "history.json",
        None,
    ),
    "history-epochs-not-objects": (
        lambda run: _edit_json(run / "history.json", lambda h: {k: [1, "x"] for k in h}),
        "history.json",
        None,
    ),
    "kl-per-dim-not-json": (
        lambda run: _edit_json(run / "results.json", _set_first_row("kl_per_dim", "not json")),
        "results.json",
        "kl_per_dim",
    ),
    "iw-nll-is-text": (
        lambda run: _edit_json(run / "results.json", _set_first_row("iw_nll", "abc")),
        "results.json",
        "iw_nll",
    ),
    "rows-not-objects": (
        lambda run: (run / "results.json").write_text("[1, 2]"),
        "results.json",
        None,
    ),
}


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(f"## {heading}")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end >= 0 else None]


class TestDamagedFolders:
    @pytest.mark.parametrize("damage", list(DAMAGES))
    def test_report_on_a_damaged_file(self, run_copy, damage, vaebench_cli):
        spoil, filename, field = DAMAGES[damage]
        spoil(run_copy)
        before = snapshot(run_copy)
        done = vaebench_cli("report", str(run_copy))
        assert_no_traceback(done)
        if damage == "iw-nll-is-text" and done.returncode == 0:  # shown as missing: fine
            quality = _section((run_copy / "report.md").read_text(), "Quality")
            assert "abc" not in quality, "a text metric was shown as a number"
        else:
            assert_refused(done, str(run_copy / filename), *([field] if field else []))
        assert_kept(before, run_copy)

    def test_report_on_a_plugin_name_with_mathtext(self, run_copy, vaebench_cli):
        _rename_plugin(run_copy)
        before = snapshot(run_copy)
        done = vaebench_cli("report", str(run_copy))
        assert_no_traceback(done)
        assert done.returncode == 0, show(done)
        assert MATHTEXT in (run_copy / "report.html").read_text()
        assert_kept(before, run_copy)

    @pytest.mark.parametrize("damage", list(DAMAGES))
    def test_compare_with_a_damaged_file(
        self, finished_run, run_copy, tmp_path, damage, vaebench_cli
    ):
        base = tmp_path / "base"
        shutil.copytree(finished_run, base)
        spoil, filename, _field = DAMAGES[damage]
        spoil(run_copy)
        before_base, before_new = snapshot(base), snapshot(run_copy)
        done = vaebench_cli("compare", str(base), str(run_copy))
        assert_refused(done, str(run_copy / filename))
        assert_kept(before_base, base)
        assert_kept(before_new, run_copy)


# -- 9. orphans and signals ---------------------------------------------------------------------------


SLEEPY_PLUGIN = """
    import os
    import time

    import vaebench


    class SleepyObjective:
        '''The vae loss, but training waits while the flag file exists (at most 120 s).'''

        variational = True

        def __init__(self, **options):
            pass

        def loss(self, model, x, step):
            flag = os.environ.get("VAEBENCH_TEST_SLEEPY_FLAG", "")
            deadline = time.monotonic() + 120
            while flag and os.path.exists(flag) and time.monotonic() < deadline:
                time.sleep(0.05)
            terms = model.loss_terms(x)
            return (terms.recon + terms.kl).mean(), {"recon": terms.recon, "kl": terms.kl}


    @vaebench.hookimpl
    def vaebench_register_models(register):
        register("sleepy", SleepyObjective)
"""

SIGNAL_SWEEP = (
    SMALL_SWEEP
    + """
[axes]
models = ["vae", "sleepy"]
"""
)


@pytest.fixture
def sleepy(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Environment with the ``sleepy`` model installed, and its flag file (created)."""
    root = write_distribution(
        tmp_path / "site", "vaebench-sleepy", "1.0", "vaebench_sleepy_test", SLEEPY_PLUGIN,
        {"sleepy": "vaebench_sleepy_test"},
    )  # fmt: skip
    flag = tmp_path / "sleep.flag"
    flag.write_text("training waits while this file exists\n")
    env = {**os.environ, **with_path(root), "VAEBENCH_TEST_SLEEPY_FLAG": str(flag)}
    yield env, flag
    flag.unlink(missing_ok=True)  # whatever still sleeps wakes up and ends


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"exited {proc.returncode} before {what}\n{out[-1500:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def processes_with(marker: str) -> dict[int, str]:
    """Live (non-zombie) processes whose environment holds ``marker``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
    return {pid: cmd.decode(errors="replace")[:200] for pid, cmd in found.items()}


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the session this test started (the process and whatever it left behind)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
class TestSignals:
    def test_sigkill_of_a_sweep_leaves_no_worker_and_resume_finishes(self, tmp_path, sleepy):
        env, flag = sleepy
        marker = f"VAEBENCH_TEST_SWEEP={uuid.uuid4().hex}"
        env = {**env, marker.split("=")[0]: marker.split("=")[1]}
        (tmp_path / "sweep.toml").write_text(SIGNAL_SWEEP)
        out = tmp_path / "sweep"
        args = [sys.executable, "-m", "vaebench", "sweep", "sweep.toml", "--workers", "2"]
        args += ["--out", str(out), "--quiet"]
        cells = out / "cells"
        problems = []
        proc = subprocess.Popen(
            args, cwd=tmp_path, env=env, start_new_session=True, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:

            def started() -> bool:
                done = sorted(cells.glob("*/done.json")) if cells.is_dir() else []
                begun = sorted(cells.glob("*/cell.json")) if cells.is_dir() else []
                return len(done) == 1 and len(begun) == 2

            wait_for(started, 120, "the vae cell to finish while the sleepy one runs", proc)
            (finished,) = [p.parent for p in cells.glob("*/done.json")]
            assert "vae" in finished.name and "sleepy" not in finished.name, finished
            assert json.loads((finished / "done.json").read_text())["status"] == "ok"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            deadline = time.monotonic() + 10
            while processes_with(marker) and time.monotonic() < deadline:
                time.sleep(0.2)
            left = processes_with(marker)
            if left:
                problems.append(f"10 s after SIGKILL of the sweep, still running: {left}")
        finally:
            kill_group(proc)
            for pid in processes_with(marker):  # left outside the group: still ours
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        kept = snapshot(finished)
        flag.unlink()
        resumed = run_cli(
            "sweep", "sweep.toml", "--workers", "2", "--out", str(out), "--resume", "--quiet",
            env_extra=env, cwd=tmp_path,
        )  # fmt: skip
        if "Traceback" in resumed.stdout + resumed.stderr or resumed.returncode != 0:
            problems.append(f"--resume failed:\n{show(resumed)}")
        else:
            if snapshot(finished) != kept:
                problems.append(f"--resume re-ran the finished cell {finished.name}")
            statuses = {
                p.parent.name: json.loads(p.read_text())["status"]
                for p in cells.glob("*/done.json")
            }
            if sorted(statuses.values()) != ["ok", "ok"]:
                problems.append(f"after --resume, cell statuses: {statuses}")
        assert not problems, "\n".join(problems)

    @pytest.mark.parametrize(
        ("sig", "code"),
        [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
        ids=["SIGINT", "SIGTERM"],
    )
    def test_signal_during_a_run_keeps_the_finished_model(self, tmp_path, sleepy, sig, code):
        env, _flag = sleepy
        out = tmp_path / "run"
        args = [sys.executable, "-m", "vaebench", "run", "--plugins", "mlp"]
        args += ["--model", "vae,sleepy", *FAST_CLI, "--out", str(out), "--quiet"]
        # A shell's background job inherits SIGINT ignored, and Python then installs no
        # KeyboardInterrupt handler: the child starts with the default, as a terminal gives it.
        proc = subprocess.Popen(
            args, env=env, start_new_session=True, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        try:
            wait_for((out / "results.csv").is_file, 120, "the first model to finish", proc)
            checkpoints = snapshot(out / "checkpoints")
            time.sleep(0.5)  # well inside the sleepy model's training
            os.kill(proc.pid, sig)
            try:
                stdout, stderr = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running 60 s after {sig.name}")
        finally:
            if proc.poll() is None:
                kill_group(proc)
        done = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
        assert_no_traceback(done)
        assert done.returncode == code, f"expected exit {code}\n{show(done)}"
        lines = stderr.strip().splitlines()
        assert len(lines) <= 1 and all(line.startswith("vaebench: ") for line in lines), show(done)
        rows = (out / "results.csv").read_text().splitlines()
        assert len(rows) == 2 and rows[1].startswith("vae,mlp,normal,fp32,none,ok,"), rows
        assert checkpoints, "the finished model saved no checkpoint"
        assert_kept(checkpoints, out / "checkpoints")


@pytest.mark.parametrize(
    "args",
    [
        ("--seed", "99999999999999999999999"),
        ("--seed", str(2**63)),
        ("--seeds", f"1,{2**70}"),
    ],
)
def test_a_seed_torch_cannot_take_is_refused_up_front(tmp_path, args):
    """torch.manual_seed takes a signed 64-bit integer: a larger seed used to train, then
    fail the model ("Overflow when unpacking long long") with files left behind."""
    out = tmp_path / "run"
    result = run_cli("run", *args, "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "must" in result.stderr
    assert str(2**63) in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_a_sweep_file_seed_out_of_range_is_refused():
    from vaebench.config import RunConfig
    from vaebench.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"sweep\.toml: seeds: must each be < 9223372036854775808"
    ):
        RunConfig.from_mapping({"seeds": [0, 2**64]}, "sweep.toml")
    assert RunConfig.from_mapping({"seed": 2**63 - 1}, "sweep.toml").seed == 2**63 - 1


@pytest.mark.parametrize(
    "args, needles",
    [
        (
            ("--iw-samples", "1000000000000"),
            ("--iw-samples 1,000,000,000,000", "K x 16 test", "days"),
        ),
        (
            ("--epochs", "10000000000"),
            ("--epochs 10,000,000,000", "training examples", "lower --epochs"),
        ),
        (
            ("--model", "iwae", "-M", "iwae_samples=100000", "--epochs", "100000"),
            ("x K = 100,000", "decoder passes"),
        ),
        (("--timing-batch-sizes", "64,1000000000"), ("--timing-batch-sizes 1,000,000,000", "GiB")),
    ],
    ids=["iw-samples", "epochs", "iwae-k-times-epochs", "timing-batch"],
)
def test_absurd_work_for_the_data_is_refused_with_its_cost(cli_limited, tmp_path, args, needles):
    """K = 10^12 used to run for ever in silence (killed after 120 s); each such setting now
    stops before training, in one line that states what it would cost, with nothing written."""
    out = tmp_path / "run"
    done = cli_limited("run", *FAST_CLI, *args, "--out", str(out), timeout=60)  # later flags win
    assert_refused(done, *needles)
    assert not out.exists()


def test_the_largest_published_protocol_is_not_refused():
    """K = 5000 over 60,000 test images and IWAE's 3,280 epochs of 50,000 at k = 50 pass."""
    from vaebench.config import RunConfig
    from vaebench.workload import check_workload

    check_workload(RunConfig(iw_samples=5000), 50_000, 60_000, 784)
    check_workload(
        RunConfig(models=["iwae"], model_options={"iwae_samples": 50}, epochs=3280),
        50_000, 10_000, 784,
    )  # fmt: skip
