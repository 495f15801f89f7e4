"""``vaebench data``: fetch, verify and list each task's published files.

Downloads go through pooch (what SciPy and scikit-image use for their data), one mirror after
another, into a staging folder beside the data (``.partial``): a file reaches its place only
after its sha256 equals the one pinned in the task file, and an archive is unpacked member by
member into temporary files that are renamed into place, so an interrupted or failed fetch
never leaves a file that looks finished (the next fetch starts that file afresh). A download
whose hash differs is moved to ``.rejected`` and never used. A folder being fetched is
locked, so two fetches of one task at once wait for each other and the second downloads
nothing. After a fetch, ``.vaebench-manifest.json`` records each file's sha256; ``verify``
checks every file against it (and against the pinned hash where the task file has one).
Nothing here runs during ``vaebench run`` unless ``--download`` asks for it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vaebench.config import DATA_ENV
from vaebench.errors import DataError, VaebenchError, first_line
from vaebench.formats import sha256_file
from vaebench.tasks import Source, Task, find_files

MANIFEST = ".vaebench-manifest.json"
STAGING = ".partial"
REJECTED = ".rejected"
TIMEOUT_S = 30.0  # per connection and per read: a server that hangs costs this, not forever
LOCK_WAIT_S = 3600.0  # another fetch of the same folder: wait for it


class FetchError(VaebenchError):
    """A fetch that cannot go on: one line naming the file, what was tried and what to do."""


def default_root() -> Path:
    """The platform's user cache folder (``platformdirs``), under ``vaebench/data``."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("vaebench", appauthor=False)) / "data"


def data_root(given: str | Path | None) -> Path:
    """``--data-root``, else ``$VAEBENCH_DATA``, else ``default_root()``."""
    root = given or os.environ.get(DATA_ENV) or default_root()
    return Path(root).expanduser()


@dataclass(frozen=True)
class FileState:
    """One of a task's files: where it is and what is known of it."""

    name: str
    path: Path
    state: str  # missing, present (not fetched here), verified, or mismatch
    detail: str = ""


def folder_of(task: Task, root: Path) -> Path:
    return root / task.folder if task.folder else root


def _manifest(folder: Path) -> dict[str, dict]:
    try:
        found = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _pinned(task: Task) -> dict[str, str]:
    """File name -> its sha256 where a task file pins the file itself (plain downloads, or
    an ``unpacked_sha256`` entry)."""
    pins: dict[str, str] = {}
    for source in task.sources:
        pins.update(source.unpacked_sha256)
        if source.unpack == "none":
            pins.update({name: source.sha256 for name in source.provides.values()})
    return pins


def states(task: Task, root: Path, *, hashing: bool) -> list[FileState]:
    """Each file of ``task`` under ``root``: with ``hashing``, every present file's sha256 is
    computed and checked (the pinned hash first, else the manifest a fetch wrote); without,
    a manifest entry whose size still matches reads as verified."""
    folder = folder_of(task, root)
    manifest, pins = _manifest(folder), _pinned(task)
    try:  # where a run would read them (the task's folder, else the root; a .gz IDX twin)
        where = {task.files[role]: path for role, path in find_files(task, root).items()}
    except DataError:
        where = {}
    found = []
    for name in task.files.values():
        path = where.get(name, folder / name)
        if path.name != name:
            found.append(FileState(name, path, "present", "gzipped"))
            continue
        if not path.is_file():
            found.append(FileState(name, path, "missing"))
            continue
        if path.parent != folder:  # files in the root itself: no manifest of ours there
            manifest = {}
        entry = manifest.get(name)
        entry = entry if isinstance(entry, dict) else {}  # a hand-edited manifest
        want = pins.get(name) or entry.get("sha256")
        if not hashing:
            same_size = entry.get("size") == path.stat().st_size
            found.append(FileState(name, path, "verified" if entry and same_size else "present"))
            continue
        if want is None:
            found.append(FileState(name, path, "present", "no pinned or recorded sha256"))
            continue
        got = sha256_file(path)
        state = "verified" if got == want else "mismatch"
        found.append(FileState(name, path, state, "" if got == want else f"sha256 {got[:12]}…"))
    return found


class _RichBar:
    """pooch's progress-bar protocol (``total``, ``update``, ``reset``, ``close``) on rich."""

    def __init__(self, label: str) -> None:
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        self.total = 0
        self._progress = Progress(
            *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
            transient=True,
        )  # fmt: skip
        self._task = self._progress.add_task(label, total=None)
        self._progress.start()

    def update(self, amount: int) -> None:
        self._progress.update(self._task, total=self.total or None, advance=amount)

    def reset(self) -> None:
        self._progress.reset(self._task, total=self.total or None)

    def close(self) -> None:
        self._progress.stop()


class TooLarge(OSError):
    """A server sent more bytes than the file can hold."""


class _BoundedDownloader:
    """A pooch downloader (``downloader(url, output_file, pooch)``) that a server cannot
    make run for ever or fill the disk: at most ``limit`` bytes (the pinned size, else
    ``MOST_BYTES``), ``timeout`` per connection and read, ``deadline`` seconds in all, and no
    transparent decompression (``Accept-Encoding: identity``: the pinned hash is of the bytes
    as distributed)."""

    def __init__(self, limit: int, timeout: float, deadline: float, bar) -> None:
        self.limit, self.timeout, self.deadline, self.bar = limit, timeout, deadline, bar

    def __call__(self, url: str, output_file, pooch=None) -> None:
        import time

        import requests

        started = time.monotonic()
        headers = {"Accept-Encoding": "identity"}
        with requests.get(url, stream=True, timeout=self.timeout, headers=headers) as response:
            response.raise_for_status()
            announced = int(response.headers.get("content-length") or 0)
            if announced > self.limit:
                raise TooLarge(
                    f"the server announces {announced:,} bytes, more than {self.limit:,}"
                )
            if self.bar:
                self.bar.total = announced or self.limit
                self.bar.reset()
            written = 0
            with open(output_file, "wb") if isinstance(output_file, str) else contextlib.nullcontext(output_file) as out:  # fmt: skip
                for chunk in response.raw.stream(1 << 16, decode_content=False):
                    written += len(chunk)
                    if written > self.limit:
                        raise TooLarge(f"more than {self.limit:,} bytes")
                    if time.monotonic() - started > self.deadline:
                        raise TimeoutError(f"still downloading after {self.deadline:.0f} s")
                    out.write(chunk)
                    if self.bar:
                        self.bar.update(len(chunk))
            if announced and written != announced:
                raise OSError(f"transfer cut short: {written:,} of {announced:,} bytes")


MOST_BYTES = 8 * 2**30  # a download with no pinned size: no published file here is larger
DEADLINE_S = 6 * 3600.0  # a whole download, however slow the link


def _download(source: Source, staging: Path, timeout: float, progress: bool) -> tuple[Path, str]:
    """The first mirror's download whose sha256 is the pinned one, and its URL."""
    import pooch

    pooch.get_logger().setLevel(logging.ERROR)  # it logs every download and hash
    tried = []
    for url in source.urls:
        (staging / source.name).unlink(missing_ok=True)  # a stale one from an earlier try
        bar = _RichBar(f"{source.name} from {url}") if progress else False
        try:
            limit = source.size or MOST_BYTES
            downloader = _BoundedDownloader(limit, timeout, DEADLINE_S, bar)
            path = Path(
                pooch.retrieve(url, None, fname=source.name, path=staging, downloader=downloader)
            )
        except Exception as exc:  # any failure of one mirror: try the next
            why = first_line(exc)
            tried.append(f"{url} ({type(exc).__name__}: {why})")
            continue
        finally:
            if bar:
                bar.close()
        got = sha256_file(path)
        if got == source.sha256:
            return path, url
        rejected = staging.parent / REJECTED
        rejected.mkdir(exist_ok=True)
        kept = rejected / f"{source.name}.{got[:12]}"
        os.replace(path, kept)
        tried.append(f"{url} (sha256 {got[:12]}… is not the pinned {source.sha256[:12]}…; kept "
                     f"aside in {kept})")  # fmt: skip
    files = ", ".join(source.provides.values())
    unpacked = "" if source.unpack == "none" else f" (unpacked from {source.name})"
    raise FetchError(
        f"could not fetch {source.name}: tried {'; '.join(tried)}. Offline? Place {files}"
        f"{unpacked} in {staging.parent} by hand; `vaebench data verify` checks it"
    )


def _safe_member(name: str, archive: str) -> str:
    """A member path that stays inside the archive's folder, else one refusing line."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name in (".", "./"):  # the archive's own folder (tar -C DIR -czf x.tar.gz .)
        return name
    if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise FetchError(
            f"{archive}: member '{name}' escapes its folder; refused, nothing unpacked"
        )
    return name


@contextlib.contextmanager
def _members(archive: Path, unpack: str) -> Iterator[tuple[dict[str, object], Callable]]:
    """Members by name and the function that opens one; every member's path is checked
    before any is read."""
    if unpack == "gz":
        with gzip.open(archive, "rb") as handle:
            yield {"": handle}, lambda member: member
        return
    if unpack == "tar.gz":
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _safe_member(member.name, archive.name)
                if member.issym() or member.islnk():  # never written, but no archive of ours
                    _safe_member(member.linkname, archive.name)  # points outside itself
            yield {m.name: m for m in members if m.isfile()}, tar.extractfile
        return
    with zipfile.ZipFile(archive) as zipped:
        for name in zipped.namelist():
            _safe_member(name, archive.name)
        yield {name: name for name in zipped.namelist()}, zipped.open


def _readable(path: Path) -> None:
    """What a plain ``open`` would have made (``mkstemp`` makes 0600): a shared data folder
    stays readable to its other users."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _place(source: Source, download: Path, folder: Path) -> dict[str, str]:
    """Each provided file of a verified download (in the locked staging folder) moved or
    unpacked into ``folder`` atomically; name -> sha256."""
    _readable(download)
    if source.unpack == "none":
        ((_, name),) = source.provides.items()
        os.replace(download, folder / name)
        return {name: source.sha256}  # what _download checked
    try:
        return _unpack(source, download, folder)
    except (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile) as exc:
        why = first_line(exc)
        raise FetchError(f"{source.name}: not a readable {source.unpack} archive ({why})") from None


def _unpack(source: Source, download: Path, folder: Path) -> dict[str, str]:
    placed = {}
    with _members(download, source.unpack) as (members, opener):
        for member, name in source.provides.items():
            if member not in members:
                raise FetchError(f"{source.name}: has no member '{member}' (for {name})")
            handle = opener(members[member])
            fd, temp = tempfile.mkstemp(dir=download.parent, prefix=f".{name}.")
            digest = hashlib.sha256()
            try:
                with os.fdopen(fd, "wb") as out, contextlib.closing(handle):
                    while chunk := handle.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
            except (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile) as exc:
                Path(temp).unlink(missing_ok=True)
                why = first_line(exc)
                raise FetchError(f"{source.name}: cannot unpack {member or name}: {why}") from None
            want = source.unpacked_sha256.get(name)
            if want and digest.hexdigest() != want:
                Path(temp).unlink(missing_ok=True)
                raise FetchError(f"{source.name}: unpacked {name} has sha256 "
                                 f"{digest.hexdigest()[:12]}…, not the pinned {want[:12]}…")  # fmt: skip
            _readable(Path(temp))
            os.replace(temp, folder / name)
            placed[name] = digest.hexdigest()
    download.unlink()
    return placed


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe."):
            pass
    except OSError as exc:
        raise FetchError(
            f"cannot write to {folder} ({exc.strerror or exc}): give --data-root a folder you "
            f"can write, or set ${DATA_ENV}"
        ) from None


@dataclass
class FetchReport:
    downloaded: list[str]
    kept: list[str]


def fetch(
    task: Task, root: Path, *, timeout: float = TIMEOUT_S, progress: bool = True
) -> FetchReport:
    """Everything ``task`` needs under ``root``; files already there and verified stay."""
    from filelock import FileLock, Timeout

    if not task.sources:
        raise FetchError(
            f"task {task.name} pins no download source: get {', '.join(task.files.values())} "
            f"from {task.published} and place them in {folder_of(task, root)}"
        )
    if not timeout > 0 or timeout == float("inf"):
        raise FetchError(f"--timeout must be a positive number of seconds, got {timeout}")
    folder = folder_of(task, root)
    _writable(folder)
    report = FetchReport([], [])
    try:
        lock = FileLock(folder / ".fetch.lock", timeout=LOCK_WAIT_S)
        with lock:
            now = {s.name: s for s in states(task, root, hashing=True)}
            staging = folder / STAGING
            staging.mkdir(exist_ok=True)
            manifest = _manifest(folder)
            for source in task.sources:
                names = list(source.provides.values())
                if all(now[n].state == "verified" for n in names if n in now):
                    report.kept += names
                    continue
                download, url = _download(source, staging, timeout, progress)
                for name, digest in _place(source, download, folder).items():
                    manifest[name] = {"sha256": digest, "size": (folder / name).stat().st_size,
                                      "from": url, "download_sha256": source.sha256,
                                      "hash_source": source.hash_source}  # fmt: skip
                report.downloaded += names
                _write_manifest(folder, manifest)
            shutil.rmtree(staging, ignore_errors=True)
    except Timeout:
        raise FetchError(
            f"{folder} stayed locked by another fetch for {LOCK_WAIT_S:.0f} s"
        ) from None
    return report


def _write_manifest(folder: Path, manifest: dict) -> None:
    from vaebench.io import atomic_write_text

    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
