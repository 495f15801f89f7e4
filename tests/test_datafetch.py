"""``vaebench data``: fetching tasks' files from a real HTTP server on the loopback address.

The server (the standard library's ``http.server`` in a thread) serves files in their real
formats, written by the tests, and misbehaves on request: a missing file, a transfer cut
short, a server that never answers, bytes that are not the pinned ones. No test reaches
beyond 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import FAST_CLI, run_cli, write_amat, write_distribution
from vaebench.datafetch import MANIFEST, REJECTED, FetchError, data_root, fetch, states
from vaebench.tasks import task_from_mapping


class Server:
    """Routes path -> (behaviour, bytes); counts the requests each path got."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                behaviour, body = server.routes.get(self.path, ("missing", b""))
                if behaviour == "missing":
                    self.send_error(404)
                    return
                if behaviour == "hang":
                    time.sleep(30)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if behaviour == "truncate":  # half the promised bytes, then the line drops
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, path: str, body: bytes, behaviour: str = "ok") -> str:
        self.routes[path] = (behaviour, body)
        return self.url + path


@pytest.fixture
def server():
    served = Server()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def amat_bytes(tmp_path: Path, n: int, seed: int) -> bytes:
    path = tmp_path / f"images-{seed}.amat"
    write_amat(path, np.random.default_rng(seed).integers(0, 2, (n, 28, 28)))
    return path.read_bytes()


SPLITS = {"train": 40, "valid": 10, "test": 20}


def loop_task(sources: list[dict], name: str = "loop-mnist"):
    return task_from_mapping(
        {
            "name": name, "version": 1,
            "data": {"format": "amat", "folder": "binarized_mnist", "published": "loopback",
                     "files": {s: f"binarized_mnist_{s}.amat" for s in SPLITS},
                     "sources": sources},
        },
        "test",
    )  # fmt: skip


def plain_sources(server: Server, tmp_path: Path, *, mirrors=("ok",)) -> tuple[list, dict]:
    """One plain .amat source per split; each behaviour in ``mirrors`` is one mirror."""
    sources, bodies = [], {}
    for i, split in enumerate(SPLITS):
        body = amat_bytes(tmp_path, SPLITS[split], i)
        name = f"binarized_mnist_{split}.amat"
        urls = [server.serve(f"/m{j}/{name}", body, how) for j, how in enumerate(mirrors)]
        sources.append({"name": name, "urls": urls, "sha256": sha(body), "hash_source": "test"})
        bodies[name] = body
    return sources, bodies


def visible_files(root: Path) -> set[str]:
    """Files a reader could mistake for data: everything but the bookkeeping dot-files."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def test_fetch_places_verified_files_and_a_second_fetch_downloads_nothing(server, tmp_path):
    sources, bodies = plain_sources(server, tmp_path)
    task, root = loop_task(sources), tmp_path / "data"
    report = fetch(task, root, progress=False)
    assert sorted(report.downloaded) == sorted(bodies)
    for name, body in bodies.items():
        assert (root / "binarized_mnist" / name).read_bytes() == body
    assert {s.state for s in states(task, root, hashing=True)} == {"verified"}
    hits = dict(server.hits)
    again = fetch(task, root, progress=False)
    assert again.downloaded == [] and sorted(again.kept) == sorted(bodies)
    assert server.hits == hits, "a verified file was downloaded again"
    assert (root / "binarized_mnist" / MANIFEST).is_file()


def test_a_failing_mirror_is_skipped_for_the_next(server, tmp_path):
    sources, bodies = plain_sources(server, tmp_path, mirrors=("missing", "ok"))
    fetch(loop_task(sources), tmp_path / "data", progress=False)
    assert all(server.hits[f"/m0/{name}"] == 1 for name in bodies)  # tried, failed, moved on
    assert visible_files(tmp_path / "data") == {f"binarized_mnist/{n}" for n in bodies}


def test_a_wrong_hash_is_refused_and_kept_aside_never_used(server, tmp_path):
    sources, _ = plain_sources(server, tmp_path)
    sources[0]["sha256"] = sha(b"the publisher's bytes")
    root = tmp_path / "data"
    with pytest.raises(FetchError, match="is not the pinned") as refused:
        fetch(loop_task(sources), root, progress=False)
    assert "\n" not in str(refused.value) and "Offline?" in str(refused.value)
    assert not (root / "binarized_mnist" / sources[0]["name"]).exists()
    kept = list((root / "binarized_mnist" / REJECTED).iterdir())
    assert len(kept) == 1 and kept[0].name.startswith(sources[0]["name"])


def test_a_truncated_transfer_leaves_no_half_written_file(server, tmp_path):
    sources, _ = plain_sources(server, tmp_path, mirrors=("truncate",))
    root = tmp_path / "data"
    with pytest.raises(FetchError, match=r"could not fetch binarized_mnist_train\.amat"):
        fetch(loop_task(sources), root, progress=False)
    assert visible_files(root) == set()
    assert not list((root / "binarized_mnist").glob(".partial/*"))


def test_a_server_that_hangs_costs_the_timeout_not_forever(server, tmp_path):
    sources, _ = plain_sources(server, tmp_path, mirrors=("hang",))
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"Timeout|timed out"):
        fetch(loop_task(sources), tmp_path / "data", timeout=1.0, progress=False)
    assert time.monotonic() - started < 10


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, body in members.items():
            zipped.writestr(name, body)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["gz", "tar.gz", "zip"])
def test_archives_unpack_into_place(server, tmp_path, kind):
    bodies = {f"binarized_mnist_{s}.amat": amat_bytes(tmp_path, n, i)
              for i, (s, n) in enumerate(SPLITS.items())}  # fmt: skip
    if kind == "gz":
        sources = []
        for name, body in bodies.items():
            packed = gzip.compress(body)
            url = server.serve(f"/{name}.gz", packed)
            sources.append({"name": f"{name}.gz", "urls": [url], "sha256": sha(packed),
                            "unpack": "gz", "provides": {"": name}, "hash_source": "test",
                            "unpacked_sha256": {name: sha(body)}})  # fmt: skip
    else:
        pack = _tar_gz if kind == "tar.gz" else _zip
        packed = pack({f"inner/{name}": body for name, body in bodies.items()})
        url = server.serve(f"/all.{kind}", packed)
        sources = [{"name": f"all.{kind}", "urls": [url], "sha256": sha(packed), "unpack": kind,
                    "provides": {f"inner/{n}": n for n in bodies}, "hash_source": "test"}]  # fmt: skip
    root = tmp_path / "data"
    fetch(loop_task(sources), root, progress=False)
    for name, body in bodies.items():
        assert (root / "binarized_mnist" / name).read_bytes() == body
    assert visible_files(root) == {f"binarized_mnist/{n}" for n in bodies}  # archives removed


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
@pytest.mark.parametrize("evil", ["../escaped.amat", "/tmp/escaped.amat"])
def test_an_archive_member_escaping_its_folder_is_refused(server, tmp_path, kind, evil):
    bodies = {f"binarized_mnist_{s}.amat": amat_bytes(tmp_path, n, i)
              for i, (s, n) in enumerate(SPLITS.items())}  # fmt: skip
    pack = _tar_gz if kind == "tar.gz" else _zip
    packed = pack({**bodies, evil: b"0 1\n"})
    url = server.serve(f"/evil.{kind}", packed)
    sources = [{"name": f"evil.{kind}", "urls": [url], "sha256": sha(packed), "unpack": kind,
                "provides": {n: n for n in bodies}, "hash_source": "test"}]  # fmt: skip
    root = tmp_path / "data"
    with pytest.raises(FetchError, match="escapes its folder; refused, nothing unpacked"):
        fetch(loop_task(sources), root, progress=False)
    assert visible_files(root) == set()
    assert not (tmp_path / "escaped.amat").exists() and not Path("/tmp/escaped.amat").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_data_root_is_one_line(server, tmp_path):
    sources, _ = plain_sources(server, tmp_path)
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    try:
        with pytest.raises(FetchError, match="cannot write to"):
            fetch(loop_task(sources), root, progress=False)
    finally:
        root.chmod(0o700)


def test_a_data_root_under_a_file_is_one_line(server, tmp_path):
    """The read-only case as root can meet it too: the data root cannot be created."""
    sources, _ = plain_sources(server, tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(FetchError, match=r"cannot write to .*a-file"):
        fetch(loop_task(sources), blocker / "data", progress=False)


def test_the_data_root_is_the_flag_else_the_environment_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "flag") == tmp_path / "flag"
    assert data_root(None) == tmp_path / "env"
    monkeypatch.delenv("VAEBENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root(None) == tmp_path / "cache" / "vaebench" / "data"


# -- the command line, with the task registered by a plugin as a user's would be ----------


def task_plugin(tmp_path: Path, sources: list[dict]) -> dict[str, str]:
    """A installed plugin distribution registering ``loop-mnist`` from a TOML file."""
    lines = ['name = "loop-mnist"', "version = 1", "", "[data]", 'format = "amat"',
             'folder = "binarized_mnist"', 'published = "loopback"',
             "files = { " + ", ".join(f'{s} = "binarized_mnist_{s}.amat"' for s in SPLITS) + " }"]  # fmt: skip
    for src in sources:
        urls = ", ".join(f'"{u}"' for u in src["urls"])
        lines += ["", "[[data.sources]]", f'name = "{src["name"]}"', f"urls = [{urls}]",
                  f'sha256 = "{src["sha256"]}"', 'hash_source = "test"']  # fmt: skip
    toml = tmp_path / "loop-mnist.toml"
    toml.write_text("\n".join(lines) + "\n")
    source = f"""
        import functools
        from vaebench import hookimpl
        from vaebench.tasks import task_from_file

        @hookimpl
        def vaebench_register_tasks(register):
            register("loop-mnist", functools.partial(task_from_file, {str(toml)!r}))
    """
    root = write_distribution(tmp_path / "site", "vaebench-loop", "1.0", "vaebench_loop", source,
                              {"loop": "vaebench_loop"})  # fmt: skip
    return {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_fetch_then_run_on_the_fetched_files_and_fetch_again_for_nothing(server, tmp_path):
    sources, _ = plain_sources(server, tmp_path)
    env = task_plugin(tmp_path, sources)
    data = tmp_path / "data"
    done = run_cli("data", "fetch", "loop-mnist", "--data-root", str(data), "-q", env_extra=env)
    assert done.returncode == 0, done.stderr
    assert "loop-mnist: downloaded 3" in done.stdout
    hits = dict(server.hits)
    again = run_cli("data", "fetch", "loop-mnist", "--data-root", str(data), "-q", env_extra=env)
    assert again.returncode == 0 and "nothing new, 3 already verified" in again.stdout
    assert server.hits == hits
    listed = run_cli("data", "list", "--data-root", str(data), env_extra=env)
    assert listed.stdout.count("loop-mnist      verified") == 3
    fast = [
        a for a in FAST_CLI if a not in ("--dataset", "synthetic", "-D", "n_train=64", "n_test=16")
    ]
    out = tmp_path / "run"
    ran = run_cli("run", "--task", "loop-mnist", "--data-root", str(data), *fast, "--epochs", "1",
                  "--out", str(out), "-q", env_extra=env)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert (out / "results.csv").is_file()


@pytest.mark.slow
def test_two_fetches_at_once_download_each_file_once_and_corrupt_nothing(server, tmp_path):
    sources, bodies = plain_sources(server, tmp_path)
    env = task_plugin(tmp_path, sources)
    data = tmp_path / "data"
    command = [sys.executable, "-m", "vaebench", "data", "fetch", "loop-mnist", "--data-root",
               str(data), "-q"]  # fmt: skip
    both = [subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    results = [p.communicate(timeout=120) for p in both]
    assert [p.returncode for p in both] == [0, 0], results
    for name, body in bodies.items():
        assert (data / "binarized_mnist" / name).read_bytes() == body
        assert server.hits[f"/m0/{name}"] == 1, "the second fetch downloaded again"


@pytest.mark.slow
@pytest.mark.parametrize("behaviour", ["missing", "truncate", "wrong-hash"])
def test_a_failed_fetch_is_one_line_and_exit_2(server, tmp_path, behaviour):
    sources, _ = plain_sources(
        server, tmp_path, mirrors=("ok" if behaviour == "wrong-hash" else behaviour,)
    )
    if behaviour == "wrong-hash":
        sources[1]["sha256"] = sha(b"other")
    env = task_plugin(tmp_path, sources)
    data = tmp_path / "data"
    done = run_cli("data", "fetch", "loop-mnist", "--data-root", str(data), "-q", env_extra=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaebench: error: could not fetch")
    assert "Traceback" not in done.stderr
    assert visible_files(data) <= {"binarized_mnist/binarized_mnist_train.amat"}


def test_a_task_without_sources_says_where_to_get_its_files(tmp_path):
    task = task_from_mapping(
        {"name": "hand", "version": 1,
         "data": {"format": "amat", "published": "https://example.org/data",
                  "files": {"train": "a.amat", "test": "b.amat"}}},
        "test",
    )  # fmt: skip
    with pytest.raises(
        FetchError,
        match=r"pins no download source: get a\.amat, b\.amat from https://example\.org/data",
    ):
        fetch(task, tmp_path, progress=False)


def test_every_builtin_task_but_omniglot_pins_each_file_and_says_where_the_hash_comes_from():
    from vaebench.tasks import builtin_factories

    for name, factory in builtin_factories().items():
        task = factory()
        if name == "omniglot":  # no published sha256 of chardata.mat could be confirmed
            assert task.sources == ()
            continue
        provided = {f for s in task.sources for f in s.provides.values()}
        assert set(task.files.values()) <= provided, name
        for source in task.sources:
            assert "TensorFlow Datasets" in source.hash_source
            assert all(u.startswith(("http://", "https://")) for u in source.urls)
            if source.unpack == "gz":  # the unpacked IDX files are pinned too
                assert set(source.unpacked_sha256) == set(source.provides.values())


def test_a_server_sending_more_than_the_pinned_size_is_cut_off(server, tmp_path):
    """No pinned-size file fills the disk: the transfer stops past the pinned size (and a
    file with no pinned size past MOST_BYTES), whatever Content-Length says."""
    sources, _ = plain_sources(server, tmp_path)
    name = sources[0]["name"]
    sources[0]["size"] = 1000
    server.serve(f"/m0/{name}", b"0 1 " * 100_000)  # 400 kB where 1 kB is pinned
    root = tmp_path / "data"
    with pytest.raises(FetchError, match="TooLarge"):
        fetch(loop_task(sources), root, progress=False)
    assert visible_files(root) == set() and not (root / "binarized_mnist" / REJECTED).exists()


def test_an_archive_that_is_not_what_it_claims_is_one_line(server, tmp_path):
    bodies = {f"binarized_mnist_{s}.amat": amat_bytes(tmp_path, n, i)
              for i, (s, n) in enumerate(SPLITS.items())}  # fmt: skip
    packed = _zip({n: b for n, b in bodies.items()})  # a zip, announced as a tar.gz
    url = server.serve("/all.tar.gz", packed)
    sources = [{"name": "all.tar.gz", "urls": [url], "sha256": sha(packed), "unpack": "tar.gz",
                "provides": {n: n for n in bodies}, "hash_source": "test"}]  # fmt: skip
    with pytest.raises(FetchError, match=r"not a readable tar\.gz archive"):
        fetch(loop_task(sources), tmp_path / "data", progress=False)
    assert visible_files(tmp_path / "data") == set()


def test_a_tar_of_a_folder_and_its_dot_member_unpacks_and_files_are_readable(server, tmp_path):
    bodies = {f"binarized_mnist_{s}.amat": amat_bytes(tmp_path, n, i)
              for i, (s, n) in enumerate(SPLITS.items())}  # fmt: skip
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        dot = tarfile.TarInfo(".")
        dot.type = tarfile.DIRTYPE
        tar.addfile(dot)
        for name, body in bodies.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    packed = buffer.getvalue()
    url = server.serve("/dot.tar.gz", packed)
    sources = [{"name": "dot.tar.gz", "urls": [url], "sha256": sha(packed), "unpack": "tar.gz",
                "provides": {f"./{n}": n for n in bodies}, "hash_source": "test"}]  # fmt: skip
    root = tmp_path / "data"
    previous = os.umask(0o022)
    try:
        fetch(loop_task(sources), root, progress=False)
    finally:
        os.umask(previous)
    for name in bodies:
        assert (root / "binarized_mnist" / name).stat().st_mode & 0o777 == 0o644


def test_a_link_member_pointing_outside_refuses_the_archive(server, tmp_path):
    body = amat_bytes(tmp_path, 5, 0)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("innocent.amat")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tar.addfile(link)
        info = tarfile.TarInfo("binarized_mnist_train.amat")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    packed = buffer.getvalue()
    url = server.serve("/link.tar.gz", packed)
    sources = [{"name": "link.tar.gz", "urls": [url], "sha256": sha(packed), "unpack": "tar.gz",
                "provides": {f"binarized_mnist_{s}.amat": f"binarized_mnist_{s}.amat"
                             for s in SPLITS}, "hash_source": "test"}]  # fmt: skip
    with pytest.raises(FetchError, match="escapes its folder"):
        fetch(loop_task(sources), tmp_path / "data", progress=False)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"provides": {"": "../../escaped.bin"}}, "must be a plain file name"),
        ({"name": "../x.amat"}, "must be a plain file name"),
        ({"provides": {"a": "x", "b": "y"}}, "provides one file"),
        ({"sha256": "ABC"}, "64 lowercase hex digits"),
        ({"urls": ["not a url"]}, "non-empty list of URLs"),
    ],
)
def test_a_task_file_whose_sources_could_escape_or_lie_is_refused(change, message):
    from vaebench.errors import ConfigError

    source = {"name": "binarized_mnist_train.amat", "urls": ["http://127.0.0.1/x"],
              "sha256": "0" * 64, "hash_source": "test", **change}  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        loop_task([source])


def test_a_hand_edited_manifest_does_not_break_list_or_verify(server, tmp_path):
    sources, _ = plain_sources(server, tmp_path)
    task, root = loop_task(sources), tmp_path / "data"
    fetch(task, root, progress=False)
    (root / "binarized_mnist" / MANIFEST).write_text('{"binarized_mnist_train.amat": "oops"}')
    assert {s.state for s in states(task, root, hashing=True)} == {"verified"}  # pinned hashes
    assert {s.state for s in states(task, root, hashing=False)} == {"present"}


def test_a_bad_timeout_is_one_line(server, tmp_path):
    sources, _ = plain_sources(server, tmp_path)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(FetchError, match="--timeout must be a positive number"):
            fetch(loop_task(sources), tmp_path / "data", timeout=bad, progress=False)


@pytest.mark.slow
def test_run_download_with_the_files_present_needs_no_network(server, tmp_path):
    sources, _ = plain_sources(server, tmp_path)
    env = task_plugin(tmp_path, sources)
    data = tmp_path / "data"
    assert run_cli("data", "fetch", "loop-mnist", "--data-root", str(data), "-q",
                   env_extra=env).returncode == 0  # fmt: skip
    server.routes.clear()  # every URL now answers 404: offline, as far as the task knows
    hits = sum(server.hits.values())
    ran = run_cli("run", "--task", "loop-mnist", "--data-root", str(data), "--download",
                  "--epochs", "1", "--iw-samples", "2", "--timing-min-time", "0.01", "--out",
                  str(tmp_path / "run"), "-q", env_extra=env)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert sum(server.hits.values()) == hits, "--download fetched files that were there"


def test_list_reports_the_files_a_run_would_read_in_the_root_too(server, tmp_path):
    """Files in the data root itself (not its task folder) are what a run reads: list and
    verify say so, instead of "missing" beside a run that trains on them."""
    sources, bodies = plain_sources(server, tmp_path)
    root = tmp_path / "flat"
    root.mkdir()
    for name, body in bodies.items():
        (root / name).write_bytes(body)
    task = loop_task(sources)
    assert {s.state for s in states(task, root, hashing=True)} == {"verified"}  # pinned hashes
    assert {s.path.parent for s in states(task, root, hashing=False)} == {root}
