"""``benchmarks.gpu_session``: the first lent GPU must come back with figures.

The smoke run proves every step on the CPU (interpreter, tiny sizes); the device check proves
that the tests it runs on CUDA build their tensors where the fixture says, not on the CPU.
"""

from __future__ import annotations

import ast
import csv
import os
import subprocess
import sys

import pytest

from benchmarks import gpu_session
from tests.helpers import REPO

FACTORIES = {
    "randn", "rand", "randint", "randperm", "zeros", "ones", "empty", "full", "tensor",
    "arange", "linspace", "eye", "as_tensor", "empty_strided", "Generator",
}  # fmt: skip
EXEMPT_MARKS = {"cuda", "host_tensors"}  # CUDA-only by design, or CPU tensors on purpose


def _marks(node: ast.FunctionDef) -> set[str]:
    names = set()
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute):
            names.add(target.attr)
    return names


def fixed_device_calls(source: str) -> list[str]:
    """Where a function builds a tensor without ``device=``, or names a device literally."""
    found = []
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, ast.FunctionDef) or _marks(func) & EXEMPT_MARKS:
            continue
        for node in ast.walk(func):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name = node.func.attr
            owner = node.func.value
            where = f"{func.name}, line {node.lineno}"
            if name in FACTORIES and isinstance(owner, ast.Name) and owner.id == "torch":
                device = next((k.value for k in node.keywords if k.arg == "device"), None)
                if device is None:
                    found.append(f"{where}: torch.{name} without device=")
                elif isinstance(device, ast.Constant) and device.value != "meta":
                    found.append(f"{where}: torch.{name}(device={device.value!r})")
            elif name in ("cuda", "cpu") and not node.args and name == "cuda":
                found.append(f"{where}: .cuda()")
            elif name == "to" and any(
                isinstance(a, ast.Constant) and a.value in ("cpu", "cuda") for a in node.args
            ):
                found.append(f"{where}: .to({node.args[0].value!r})")
    return found


def test_the_session_selection_builds_no_tensor_on_a_fixed_device():
    """Every test in the files the session draws from takes its device from the fixture, so
    on a CUDA host none hands CPU tensors to the triton backend (which refuses them)."""
    problems = {
        path: fixed_device_calls((REPO / path).read_text()) for path in gpu_session.KERNEL_TESTS
    }
    assert not any(problems.values()), problems


@pytest.mark.parametrize(
    "source, culprit",
    [
        ("def test_a(device):\n    torch.randn(3)\n", "torch.randn without device="),
        ("def test_a():\n    torch.zeros(3, device='cpu')\n", "device='cpu'"),
        ("def test_a(device):\n    x.cuda()\n", ".cuda()"),
        ("def helper():\n    torch.Generator().manual_seed(0)\n", "torch.Generator without"),
        ("def test_a(device):\n    torch.randn(2).to('cuda')\n", "torch.randn without"),
    ],
)
def test_the_device_check_catches_each_fixed_device(source, culprit):
    found = fixed_device_calls(source)
    assert any(culprit in line for line in found), found


def test_the_device_check_accepts_the_fixture_and_exempt_tests():
    ok = (
        "def test_a(device):\n    torch.randn(3, device=device)\n    torch.empty(1, device='meta')\n"
        "@pytest.mark.cuda\ndef test_b():\n    torch.randn(3, device='cuda')\n"
        "@pytest.mark.host_tensors\ndef test_c():\n    torch.randn(3, device='cpu')\n"
    )
    assert fixed_device_calls(ok) == []


def test_a_failing_step_never_stops_the_next_and_the_summary_follows_each_step(
    tmp_path, monkeypatch
):
    session = gpu_session.Session(tmp_path, smoke=True, max_seconds=60)
    seen = []

    def first():
        session.record.add(step="first", backend="x", median_ms=1.0)

    def second():
        raise RuntimeError("the device fell over")

    def third():
        seen.append((tmp_path / "RESULTS-gpu.md").read_text())
        seen.append(session.left())

    for name, fn in (("first", first), ("second", second), ("third", third)):
        monkeypatch.setattr(session, name, fn, raising=False)
    steps = tuple(gpu_session.Step(n, 1.0, n) for n in ("first", "second", "third"))
    session.run(steps)
    text, left = seen
    assert "## first" in text and "FAILED: RuntimeError: the device fell over" in text
    assert left <= 60 / 1 + 1  # the last step gets what is left, no more than the session
    rows = list(csv.DictReader((tmp_path / "gpu_session.csv").open()))
    assert [r["step"] for r in rows if r["backend"] == "(step)"] == ["first", "second", "third"]


def test_each_step_gets_its_share_of_what_is_left(tmp_path, monkeypatch):
    session = gpu_session.Session(tmp_path, smoke=True, max_seconds=100)
    budgets = []
    for name in ("a", "b"):
        monkeypatch.setattr(session, name, lambda: budgets.append(session.left()), raising=False)
    session.run((gpu_session.Step("a", 1.0, "a"), gpu_session.Step("b", 3.0, "b")))
    assert budgets[0] == pytest.approx(25, abs=2)  # 1 / (1 + 3) of 100 s
    assert budgets[1] == pytest.approx(100, abs=2)  # the last step: all that a left


def test_max_seconds_must_be_positive(capsys):
    with pytest.raises(SystemExit) as stop:
        gpu_session.main(["--out", "unused", "--smoke", "--max-seconds", "0"])
    assert stop.value.code == 2 and "--max-seconds must be positive" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_runs_every_step_in_order_and_writes_nothing_outside_out(tmp_path):
    """The whole session on the CPU: every step ran, in order, produced rows, and within 5
    minutes; caches, temporary files and the working folder stay untouched."""
    out, home, cwd, tmp = (tmp_path / name for name in ("out", "home", "cwd", "tmp"))
    for folder in (home, cwd, tmp):
        folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRITON", "TORCHINDUCTOR"))}
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONPATH=str(REPO), XDG_CACHE_HOME="")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_session", "--out", str(out), "--smoke"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((out / "gpu_session.csv").open()))
    order = [s.name for s in gpu_session.STEPS]
    assert list(dict.fromkeys(r["step"] for r in rows)) == order
    for step in order:
        measured = [r for r in rows if r["step"] == step and r["backend"] != "(step)"]
        assert measured, f"step {step} produced no rows"
        assert not [r for r in measured if r["note"].startswith(("FAILED", "error"))], measured
    passed = next(r for r in rows if r["step"] == "correctness" and r["backend"] == "pytest")
    assert " 0 failed" in passed["note"] and not passed["note"].startswith("0 passed")
    timed = [r for r in rows if r["step"] in ("bandwidth", "peers", "runner") and r["median_ms"]]
    assert {r["backend"] for r in timed} >= {"triton", "triton-philox4", "eager", "torch"}
    assert all(float(r["median_ms"]) > 0 for r in timed)
    assert any(r["method"] == "compile" for r in rows if r["step"] == "peers")
    trained = {r["backend"] for r in rows if r["step"] == "training" and r["method"] == "run"}
    assert trained == {"triton", "torch", "compile"}
    assert {r["backend"] for r in rows if r["step"] == "modes" and r["method"] == "run"} == {
        "modes: vae:mlp/normal", "modes: vae:mlp/normal [bf16]"
    }  # fmt: skip
    summary = (out / "RESULTS-gpu.md").read_text()
    assert "## Targets" in summary and all(f"## {step}" in summary for step in order)
    assert list(home.iterdir()) == list(cwd.iterdir()) == list(tmp.iterdir()) == []
    assert sum(float(r["median_ms"]) for r in rows if r["backend"] == "(step)") < 300_000


def test_a_stopped_test_run_still_counts_what_finished():
    output = (
        "tests/test_kernels_triton.py::test_a[1] PASSED [ 10%]\n"
        "tests/test_kernels_triton.py::test_b PASSED [ 20%]\n"
        "tests/test_kernels_op.py::test_c FAILED [ 30%]\n"
        "tests/test_kernels_op.py::test_d SKIPPED (needs 2 CUDA device(s)) [ 40%]\n"
    )
    counts, failures = gpu_session.read_verbose(output)
    assert counts == "2 passed, 1 failed, 1 skipped"
    assert failures == [("test_c", "failed")]
