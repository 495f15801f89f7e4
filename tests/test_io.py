"""Result files and run folders, in-process: each error's exact one-line text, the JSON and CSV
round trip read back by the real readers (``json``, pandas), and the run folder checks that
keep a finished result from being overwritten.
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from vaebench import io
from vaebench.errors import VaebenchError
from vaebench.schema import CORE_KEYS


def message(call, *args, **kwargs) -> str:
    with pytest.raises(VaebenchError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def row(**extra) -> dict:
    return {
        "model": "vae",
        "plugin": "mlp",
        "prior": "normal",
        "precision": "fp32",
        "compile": "none",
        "status": "ok",
        "iw_nll": 90.5,
        **extra,
    }


def test_check_writable_names_the_culprit(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert message(io.check_writable, a_file, "--out") == (
        f"--out {a_file}: is a file, not a folder; choose a folder"
    )
    below = a_file / "deeper" / "run"
    assert message(io.check_writable, below, "--report") == (
        f"--report {below}: {a_file} is a file, not a folder"
    )
    io.check_writable(tmp_path / "new" / "nested", "--out")  # can be created: fine
    io.check_writable(tmp_path, "--out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_check_writable_refuses_a_read_only_parent(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert message(io.check_writable, locked / "run", "--out") == (
            f"--out {locked / 'run'}: {locked} is not writable; choose another folder"
        )
    finally:
        locked.chmod(stat.S_IRWXU)


def test_check_writable_asks_for_write_and_search_permission(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(io.os, "access", lambda path, mode: asked.append((path, mode)) or True)
    io.check_writable(tmp_path / "run", "--out")
    assert asked == [(tmp_path, os.W_OK | os.X_OK)]


def test_check_writable_says_when_the_folder_is_not_writable(tmp_path, monkeypatch):
    monkeypatch.setattr(io.os, "access", lambda path, mode: False)
    assert message(io.check_writable, tmp_path / "run", "--out") == (
        f"--out {tmp_path / 'run'}: {tmp_path} is not writable; choose another folder"
    )


def test_a_run_folder_is_replaced_only_on_request(tmp_path):
    io.check_new_run_dir(tmp_path / "fresh", overwrite=False)  # absent
    empty = tmp_path / "empty"
    empty.mkdir()
    io.check_new_run_dir(empty, overwrite=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert message(io.check_new_run_dir, other, overwrite=True) == (
        f"--out {other}: holds other files and is not a vaebench run folder; "
        "choose a new or empty folder"
    )
    for name in io.RUN_FILES:
        run = tmp_path / f"run-{name}"
        run.mkdir()
        (run / name).write_text("[]")
        assert message(io.check_new_run_dir, run, overwrite=False) == (
            f"--out {run}: already holds a run; choose a new --out, or add --overwrite to "
            "replace it"
        )
        io.check_new_run_dir(run, overwrite=True)
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    assert message(io.check_new_run_dir, a_file, overwrite=True) == (
        f"--out {a_file}: is a file, not a folder; choose a folder"
    )


def test_check_output_file(tmp_path):
    assert message(io.check_output_file, tmp_path / "r.MD", "--report") == (
        f"--report {tmp_path / 'r.MD'}: give the HTML file; its Markdown twin goes beside it"
    )
    assert message(io.check_output_file, tmp_path, "--report") == (
        f"--report {tmp_path}: is a folder; give a file name (e.g. {tmp_path}/report.html)"
    )
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    assert message(io.check_output_file, a_file / "r.html", "--report") == (
        f"--report {a_file}: is a file, not a folder; choose a folder"
    )
    io.check_output_file(tmp_path / "new" / "r.html", "--report")


def test_atomic_write_creates_folders_and_honours_the_umask(tmp_path):
    path = tmp_path / "a" / "b" / "x.txt"  # two missing folders
    previous = os.umask(0o022)
    try:
        io.atomic_write_text(path, "x")
    finally:
        os.umask(previous)
    assert path.read_text() == "x" and stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_open_raises_its_own_error(tmp_path, monkeypatch):
    def refuse(*args):
        raise PermissionError("no")

    monkeypatch.setattr(io.os, "open", refuse)
    with pytest.raises(PermissionError, match="no"):  # not a FileNotFoundError of the cleanup
        io.atomic_write_text(tmp_path / "x.txt", "x")


def test_json_keeps_nan_and_infinities_readable(tmp_path):
    io.write_json(tmp_path / "small.json", {"a": 1})
    assert (tmp_path / "small.json").read_text() == '{\n  "a": 1\n}\n'  # indent 2
    path = tmp_path / "deep" / "x.json"
    payload = {"a": math.nan, "b": [math.inf, (-math.inf, 1.5)], "c": {"d": 2, "e": math.nan}}
    io.write_json(path, payload)
    text = path.read_text()
    assert text.endswith("}\n") and "\n  " in text  # indented, one trailing newline
    assert json.loads(text) == {"a": None, "b": ["inf", ["-inf", 1.5]], "c": {"d": 2, "e": None}}
    assert list(json.loads(text)) == ["a", "b", "c"]  # the payload's order, not sorted


def test_results_round_trip_through_json_and_pandas(tmp_path):
    rows = [
        row(iw_nll=math.nan, kl_per_dim=[0.5, 1.5], zeta="late"),
        row(plugin="conv", iw_nll=80.25, status="diverged at step 3"),
    ]
    io.write_results(tmp_path, rows)
    records = json.loads((tmp_path / "results.json").read_text())
    frame = pd.read_csv(tmp_path / "results.csv")
    assert list(frame.columns) == [k for k in records[0]]  # one order in both files
    assert set(CORE_KEYS) <= set(frame.columns)  # every declared column, even when absent
    assert frame.columns.get_loc("zeta") > frame.columns.get_loc("iw_nll")  # unknown: after
    assert records[0]["iw_nll"] is None and records[1]["iw_nll"] == 80.25
    assert records[0]["kl_per_dim"] == [0.5, 1.5] and records[1]["kl_per_dim"] is None
    assert frame["kl_per_dim"][0] == "[0.5, 1.5]"  # lists as JSON text in the CSV
    assert math.isnan(frame["iw_nll"][0]) and frame["iw_nll"][1] == 80.25
    assert list(frame["status"]) == ["ok", "diverged at step 3"]
    assert io.read_rows(tmp_path / "results.json")[1]["plugin"] == "conv"
    io.write_results(tmp_path, [row(options={"bins": 256})])
    assert pd.read_csv(tmp_path / "results.csv")["options"][0] == '{"bins": 256}'  # JSON


def test_atomic_torch_save_reads_back(tmp_path):
    import torch

    path = tmp_path / "weights.pt"
    io.atomic_torch_save(path, {"w": torch.arange(3.0)})
    assert torch.equal(torch.load(path)["w"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]


def test_read_json_errors(tmp_path):
    missing = tmp_path / "run" / "results.json"
    assert message(io.read_json, missing) == (
        f"{missing}: missing; is {missing.parent} a vaebench run folder?"
    )
    assert io.read_json(missing, {"x": 1}) == {"x": 1}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert message(io.read_json, bad).startswith(f"{bad}: unreadable JSON (")
    bad.write_bytes(b"\xff\xfe")
    assert message(io.read_json, bad).startswith(f"{bad}: unreadable JSON (")


@pytest.mark.parametrize(
    "rows, error",
    [
        ([], "holds no result rows (expected a list of objects)"),
        ({"a": 1}, "holds no result rows (expected a list of objects)"),
        ([row(), 3], "holds no result rows (expected a list of objects)"),
        ([row(), row(plugin=7)], "row 2: 'plugin' must be text, got 7"),
        ([row(status=None)], "row 1: 'status' must be text, got None"),
        ([row(iw_nll="90")], "row 1 (vae:mlp/normal): 'iw_nll' must be a number, got '90'"),
        ([row(iw_nll=True)], "row 1 (vae:mlp/normal): 'iw_nll' must be a number, got True"),
        (
            [row(kl_per_dim=[1.0, "x"])],
            "row 1 (vae:mlp/normal): 'kl_per_dim' must be a list of numbers",
        ),
        ([row(kl_per_dim=1.0)], "row 1 (vae:mlp/normal): 'kl_per_dim' must be a list of numbers"),
    ],
)
def test_check_rows_names_the_row_and_field(tmp_path, rows, error):
    path = tmp_path / "results.json"
    assert message(io.check_rows, rows, path) == f"{path}: {error}"


def test_check_rows_accepts_what_write_json_writes(tmp_path):
    values = [None, "inf", "-inf", 3, 2.5]
    io.check_rows([row(iw_nll=v, kl_per_dim=[v, 1.0]) for v in values], tmp_path)
    io.check_rows([row(kl_per_dim=None)], tmp_path)


def test_old_rows_read_as_fp32_eager(tmp_path):
    path = tmp_path / "results.json"
    old = {k: v for k, v in row().items() if k not in ("precision", "compile")}
    path.write_text(json.dumps([old, {**old, "precision": "bf16"}]))
    first, second = io.read_rows(path)
    assert (first["precision"], first["compile"]) == ("fp32", "none")
    assert (second["precision"], second["compile"]) == ("bf16", "none")
    path.write_text(json.dumps([old, 5]))
    assert message(io.read_rows, path) == (
        f"{path}: holds no result rows (expected a list of objects)"
    )


@pytest.mark.parametrize(
    "history",
    [
        [],
        {"vae:mlp/normal": {"epoch": 1}},
        {"vae:mlp/normal": [{"epoch": 1.0, "loss": 2.0}]},
        {"vae:mlp/normal": [{"loss": 2.0}]},
        {"vae:mlp/normal": [{"epoch": 1, "loss": "2"}]},
        {"vae:mlp/normal": [{"epoch": 1, "loss": 2.0}, 3]},
    ],
)
def test_check_history_refuses(tmp_path, history):
    path = tmp_path / "history.json"
    text = message(io.check_history, history, path)
    if isinstance(history, dict):
        assert text == (
            f"{path}: 'vae:mlp/normal' must be a list of objects of numbers with an integer 'epoch'"
        )
    else:
        assert text == f"{path}: expected an object of model label -> epochs"


def test_check_history_accepts(tmp_path):
    io.check_history({}, tmp_path)
    io.check_history({"a": [], "b": [{"epoch": 1, "loss": None, "kl": "inf"}]}, tmp_path)


def write_run(folder: Path, **files) -> Path:
    folder.mkdir(parents=True)
    io.write_results(folder, [row()])
    for name, payload in files.items():
        (folder / f"{name}.json").write_text(json.dumps(payload))
    return folder


def test_load_run_reads_every_file(tmp_path):
    history = {"vae:mlp/normal": [{"epoch": 1, "loss": 3.0}]}
    folder = write_run(
        tmp_path / "a" / "run",
        history=history,
        config={"epochs": 1},
        environment={"device": "cpu"},
        task={"name": "t"},
    )
    run = io.load_run(folder)
    assert (run.name, run.path) == ("run", folder)
    assert run.results["iw_nll"].tolist() == [90.5]
    assert (run.config, run.environment, run.task) == (
        {"epochs": 1},
        {"device": "cpu"},
        {"name": "t"},
    )
    assert run.history == history
    bare = io.load_run(write_run(tmp_path / "b" / "run"))  # only results.json: the rest empty
    assert (bare.config, bare.environment, bare.task, bare.history) == ({}, {}, {}, {})
    names = [r.name for r in io.load_runs([folder, bare.path, folder])]
    assert names == ["run", "run (2)", "run (3)"]


def test_load_run_refuses(tmp_path):
    assert message(io.load_run, tmp_path / "nope") == f"{tmp_path / 'nope'}: no such run folder"
    folder = write_run(tmp_path / "run", config=[1, 2])
    assert message(io.load_run, folder) == (
        f"{folder / 'config.json'}: expected a JSON object, got list"
    )
    (folder / "config.json").unlink()
    (folder / "history.json").write_text("[]")
    assert message(io.load_run, folder) == (
        f"{folder / 'history.json'}: expected an object of model label -> epochs"
    )


def test_environment_names_the_machine():
    import torch

    info = io.environment("cpu")
    assert info["device"] == "cpu" and info["torch"] == torch.__version__
    assert info["device_name"] == info["cpu"] == io.cpu_name() and info["cpu"]
    assert info["cpu_count"] == os.cpu_count()
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["python"].count(".") == 2 and " " not in info["python"]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=Path(io.__file__).parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert info["git_commit"] == (head.stdout.strip() if head.returncode == 0 else None)


def test_environment_holds_every_version(monkeypatch):
    import platform
    import sys

    import torch
    import triton

    import vaebench

    info = io.environment("cpu")
    assert set(info) == {
        "vaebench", "python", "platform", "torch", "triton", "cuda", "device", "device_name",
        "cpu", "cpu_count", "torch_threads", "malloc", "git_commit",
    }  # fmt: skip
    assert info["vaebench"] == vaebench.__version__ and info["triton"] == triton.__version__
    assert info["platform"] == platform.platform() and info["cuda"] == torch.version.cuda
    monkeypatch.setitem(sys.modules, "triton", None)  # not installed: the import fails
    assert io.environment("cpu")["triton"] is None


def test_cpu_name_reads_proc_cpuinfo(monkeypatch):
    text = "processor\t: 0\nmodel name\t: Test CPU: 9000 @ 1GHz\nflags\t: x\n"
    real = Path.read_text
    monkeypatch.setattr(
        Path, "read_text", lambda p, *a, **k: text if str(p) == "/proc/cpuinfo" else real(p)
    )
    assert io.cpu_name() == "Test CPU: 9000 @ 1GHz"


def test_cpu_name_falls_back_to_the_platform(monkeypatch):
    real = Path.read_text
    monkeypatch.setattr(
        Path,
        "read_text",
        lambda p, *a, **k: "flags\t: x\n" if str(p) == "/proc/cpuinfo" else real(p),
    )
    monkeypatch.setattr(io.platform, "processor", lambda: "")
    monkeypatch.setattr(io.platform, "machine", lambda: "riscv64")
    assert io.cpu_name() == "riscv64"
    monkeypatch.setattr(io.platform, "processor", lambda: "Some CPU")
    assert io.cpu_name() == "Some CPU"


def test_git_commit_is_read_where_vaebench_lives_not_where_it_runs(tmp_path, monkeypatch):
    expected = io._git_commit()
    monkeypatch.chdir(tmp_path)  # not a repository
    assert io._git_commit() == expected


def test_git_commit_outside_a_repository_is_none(monkeypatch):
    def fails(*args, **kwargs):
        raise OSError("no git")

    monkeypatch.setattr(io.subprocess, "run", fails)
    assert io._git_commit() is None
    monkeypatch.setattr(
        io.subprocess,
        "run",
        lambda *a, **k: subprocess.CompletedProcess(a, 128, stdout="", stderr="not a repo"),
    )
    assert io._git_commit() is None
