"""The download cache: registry names, URLs and local paths → verified local files.

Layout under the cache root (``C2L_CACHE_DIR`` or the platform's user cache dir for ``c2l``)::

    models/<registry-name>/<file>     registry entries (the URL's file name, so suffixes survive;
                                      a prior's YAML config sits beside its checkpoint)
    urls/<sha256(url)[:16]>/<file>    files fetched from an arbitrary http(s) URL
    open_clip/                        CLIP weights fetched by open_clip (see clip_cache_dir())
    manifest.json                     expected sha256/size of every downloaded file + hash memo

A download streams with ``requests`` into ``.<file>.part`` beside its target, hashing as it goes,
resumes with an HTTP ``Range`` request after a dropped connection (bounded retries with backoff),
restarts cleanly if the server ignores ``Range``, checks size and sha256, fsyncs and renames into
place: a file at its final path is always complete. A per-file lock (``fcntl.flock``) keeps two
processes from fetching the same file twice; without it (or where it is unsupported) each process
writes its own temporary file and the atomic rename still leaves one good file.

The expected sha256 of a file is, in order: the registry's, the server's ``X-Linked-Etag`` (large
files on huggingface.co), the one recorded in the manifest at the first download. See docs/cache.md.

Only the standard library is imported at module load; ``requests`` and ``rich`` on first download.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlsplit

from . import registry, settings
from .errors import C2LError, ChecksumError, DownloadError, OfflineError, UsageError

#: Bytes per read while hashing files on disk.
CHUNK = 1 << 20
#: Bytes per network read (a read cut short by a dropped connection is lost, so keep it small).
NET_CHUNK = 1 << 16
#: Consecutive failed attempts (without any new bytes) before a download gives up.
RETRIES = 5
#: First retry delay in seconds; doubles per consecutive failure, capped at BACKOFF_MAX_S.
BACKOFF_S = 1.0
BACKOFF_MAX_S = 30.0
#: (connect, read) timeouts in seconds for each HTTP request.
TIMEOUT_S = (15.0, 60.0)
#: HTTP status codes worth retrying.
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
#: How many hash-memo entries the manifest keeps.
_MEMO_MAX = 2000

MANIFEST = "manifest.json"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------------------------
# locations


def cache_root() -> Path:
    """The cache root: ``C2L_CACHE_DIR`` or the platform's user cache dir (not created here)."""
    return settings.cache_dir()


def clip_cache_dir() -> Path:
    """Where open_clip puts CLIP weights: ``<cache>/open_clip`` (created if possible)."""
    path = cache_root() / "open_clip"
    with contextlib.suppress(OSError):
        path.mkdir(parents=True, exist_ok=True)
    return path


def entry_path(name: str) -> Path:
    """The cache path of registry entry *name* (whether or not it is there)."""
    entry = registry.get(name)
    if entry.kind == "clip":
        return clip_cache_dir()
    return cache_root() / "models" / entry.folder_name / entry.file_name


def url_path(url: str) -> Path:
    """The cache path of a file downloaded from *url* (keyed by the URL, not the mirror)."""
    entry = _entry_for_url(url)
    if entry is not None:
        return entry_path(entry.name)
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    base = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or "download"
    return cache_root() / "urls" / key / base


def mirror_url(url: str) -> str:
    """``https://HOST/PATH`` → ``<C2L_MIRROR>/HOST/PATH`` when ``C2L_MIRROR`` is set, else *url*."""
    base = settings.mirror()
    if not base:
        return url
    parts = urlsplit(url)
    rest = parts.netloc + parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{base}/{rest}"


def _entry_for_url(url: str) -> Optional[registry.Entry]:
    for entry in registry.ENTRIES.values():
        if entry.url == url and entry.kind != "clip":
            return entry
    return None


def _rel(path: Path) -> str:
    """Manifest key of a cache file: its path relative to the cache root (POSIX style)."""
    try:
        return path.resolve().relative_to(cache_root().resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


# --------------------------------------------------------------------------------------------
# locks and the manifest


@contextlib.contextmanager
def _file_lock(lock_path: Path, *, wait_message: Optional[str] = None) -> Iterator[bool]:
    """Hold an exclusive advisory lock on *lock_path*; yields False if locking is unavailable.

    Correctness never depends on the lock (callers use unique temporary files when it yields
    False); it only avoids two processes doing the same work.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield False
        return
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            if wait_message:
                _info(wait_message)
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:  # e.g. a filesystem without flock support
            locked = False
        yield locked
    finally:
        if locked:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _empty_manifest() -> dict[str, Any]:
    return {"version": 1, "files": {}, "hashes": {}}


def read_manifest() -> dict[str, Any]:
    """The manifest (``files``: expected sha256/size per cache file; ``hashes``: the hash memo)."""
    path = cache_root() / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return _empty_manifest()
    except (OSError, ValueError):
        return _empty_manifest()  # a damaged manifest only costs re-hashing; it is rewritten below
    if not isinstance(data, dict):
        return _empty_manifest()
    data.setdefault("version", 1)
    if not isinstance(data.get("files"), dict):
        data["files"] = {}
    if not isinstance(data.get("hashes"), dict):
        data["hashes"] = {}
    return data


def _update_manifest(change: Callable[[dict[str, Any]], None]) -> None:
    """Read, change and atomically rewrite the manifest under its lock (best effort on I/O errors)."""
    from .fsutil import write_json_atomic

    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    with _file_lock(root / ".manifest.lock"):
        data = read_manifest()
        change(data)
        hashes = data["hashes"]
        if len(hashes) > _MEMO_MAX:
            for key in list(hashes)[: len(hashes) - _MEMO_MAX]:
                del hashes[key]
        with contextlib.suppress(OSError):
            write_json_atomic(root / MANIFEST, data)


def _record_file(path: Path, *, sha256: str, size: int, url: Optional[str], name: Optional[str], source: str) -> None:
    rec = {
        "name": name,
        "url": url,
        "sha256": sha256,
        "size": size,
        "source": source,  # where the expected sha256 came from: registry, server, first-download, first-seen
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    key = _rel(path)
    _update_manifest(lambda m: m["files"].__setitem__(key, rec))


def _forget_file(path: Path) -> None:
    key = _rel(path)
    abs_key = str(path.resolve())

    def change(m: dict[str, Any]) -> None:
        m["files"].pop(key, None)
        m["hashes"].pop(abs_key, None)

    _update_manifest(change)


# --------------------------------------------------------------------------------------------
# hashing


def _stat_key(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_of(path: str | os.PathLike, *, force: bool = False) -> str:
    """The sha256 (lowercase hex) of a file, memoised in the manifest by path, size, mtime and inode.

    *force* re-reads the file even if the memo matches (``c2l models verify``).
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise C2LError(f"no such file: {p}") from None
    key = str(p.resolve())
    stamp = _stat_key(st)
    if not force:
        memo = read_manifest()["hashes"].get(key)
        if isinstance(memo, dict) and all(memo.get(k) == v for k, v in stamp.items()) and memo.get("sha256"):
            return str(memo["sha256"])
    digest = _hash_file(p)
    # the file may have changed while we read it; only memoise a stable stamp
    with contextlib.suppress(OSError):
        if _stat_key(p.stat()) == stamp:
            _update_manifest(lambda m: m["hashes"].__setitem__(key, {**stamp, "sha256": digest}))
    return digest


def _memoise(path: Path, digest: str) -> None:
    key = str(path.resolve())
    stamp = _stat_key(path.stat())
    _update_manifest(lambda m: m["hashes"].__setitem__(key, {**stamp, "sha256": digest}))


# --------------------------------------------------------------------------------------------
# output (stderr only; never imports rich at module load)


def _info(message: str) -> None:
    from .cli.output import info

    info(message)


def _warn(message: str) -> None:
    from .cli.output import warn

    warn(message)


def _fmt_size(n: Optional[int]) -> str:
    if n is None:
        return "unknown size"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


class _Progress:
    """A Rich progress bar (bytes, speed, ETA) on stderr when it is a terminal; else one line."""

    def __init__(self, label: str, url: str):
        from .cli.output import stderr_console

        self.label = label
        self.url = url
        self.console = stderr_console()
        self.bar = None
        self.task = None
        self.announced = False

    def start(self, total: Optional[int], completed: int) -> None:
        if not self.console.is_terminal:
            if not self.announced:
                _info(f"downloading {self.label} ({_fmt_size(total)}) from {self.url}")
                self.announced = True
            return
        if self.bar is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total, completed=completed)
        else:
            self.bar.update(self.task, total=total, completed=completed)

    def update(self, completed: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


# --------------------------------------------------------------------------------------------
# downloading


class _Retry(Exception):
    """A transient failure: retry (resuming) after a backoff."""


class _Restart(_Retry):
    """A transient failure after which the partial file is useless: retry from byte 0."""


def _linked_sha(response: Any) -> Optional[str]:
    """The sha256 a server advertises (``X-Linked-Etag`` on huggingface.co), if any."""
    for r in [*getattr(response, "history", []), response]:
        value = r.headers.get("X-Linked-Etag") or r.headers.get("X-Linked-ETag")
        if value:
            value = value.strip()
            if value.startswith("W/"):
                value = value[2:]
            value = value.strip('"').lower()
            if _SHA_RE.match(value):
                return value
    return None


def _linked_size(response: Any) -> Optional[int]:
    for r in [*getattr(response, "history", []), response]:
        value = r.headers.get("X-Linked-Size")
        if value and value.isdigit():
            return int(value)
    return None


def _content_range(value: Optional[str]) -> tuple[Optional[int], Optional[int]]:
    """``bytes START-END/TOTAL`` → (START, TOTAL); ``bytes */TOTAL`` → (None, TOTAL)."""
    if not value:
        return None, None
    m = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value)
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _hash_prefix(path: Path) -> tuple["hashlib._Hash", int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
            n += len(block)
    return h, n


@dataclass
class _Fetched:
    sha256: str
    size: int
    server_sha256: Optional[str]


def _stream(url: str, part: Path, *, label: str, expect_size: Optional[int], resume: bool) -> _Fetched:
    """Stream *url* into *part* (resuming from its current content when *resume*), hashing as it goes."""
    import requests

    from ._version import __version__

    fetch_url = mirror_url(url)
    validator: Optional[str] = None
    meta = _part_meta(part)
    saved = _read_json(meta) if resume and part.exists() else {}
    if saved.get("url") == url:  # a partial file of this URL: resume (If-Range guards against a new version)
        h, have = _hash_prefix(part)
        validator = saved.get("validator") if isinstance(saved.get("validator"), str) else None
    else:
        _discard(part)
        h, have = hashlib.sha256(), 0
    total = expect_size
    server_sha: Optional[str] = None
    failures = 0
    progress = _Progress(label, fetch_url)
    session = requests.Session()
    try:
        while True:
            start_have = have
            headers = {"Accept-Encoding": "identity", "User-Agent": f"c2l/{__version__}"}
            if have:
                headers["Range"] = f"bytes={have}-"
                if validator:
                    headers["If-Range"] = validator
            try:
                with session.get(fetch_url, headers=headers, stream=True, timeout=TIMEOUT_S) as r:
                    server_sha = server_sha or _linked_sha(r)
                    code = r.status_code
                    if code == 416 and have:
                        _, size = _content_range(r.headers.get("Content-Range"))
                        if size is not None and size == have:
                            total = size
                            break  # what we have is already the whole file
                        raise _Restart("the server refused the resume range; restarting")
                    if code in _RETRY_STATUS:
                        raise _Retry(f"HTTP {code} {r.reason}")
                    if code not in (200, 206):
                        raise DownloadError(f"downloading {label} from {fetch_url} failed: HTTP {code} {r.reason}")
                    range_start, range_total = _content_range(r.headers.get("Content-Range"))
                    if code == 206 and have and range_start == have:
                        mode = "ab"
                        length = range_total
                    else:  # a full body (Range ignored, or a fresh start): start over cleanly
                        if have:
                            _info(f"{label}: the server sent the whole file instead of resuming; restarting")
                        h, have, mode = hashlib.sha256(), 0, "wb"
                        cl = r.headers.get("Content-Length")
                        length = range_total if code == 206 else (int(cl) if cl and cl.isdigit() else None)
                        if code == 206 and range_start not in (None, 0):
                            raise _Restart(f"the server answered with an unexpected range {r.headers.get('Content-Range')}")
                    length = length or _linked_size(r)
                    if length is not None:
                        if expect_size is not None and length != expect_size:
                            raise ChecksumError(
                                f"{label}: the server reports {length} bytes but {expect_size} are expected ({fetch_url})"
                            )
                        total = length
                    etag = r.headers.get("ETag")
                    validator = etag if etag and not etag.startswith("W/") else r.headers.get("Last-Modified")
                    if mode == "wb":  # remember what the partial file is, so a later run can resume it
                        with contextlib.suppress(OSError):
                            meta.write_text(json.dumps({"url": url, "validator": validator}))
                    progress.start(total, have)
                    with open(part, mode) as fh:
                        for chunk in r.iter_content(NET_CHUNK):
                            if chunk:
                                fh.write(chunk)
                                h.update(chunk)
                                have += len(chunk)
                                progress.update(have)
                        fh.flush()
                        os.fsync(fh.fileno())
                    if total is not None and have < total:
                        raise _Retry(f"connection closed after {have} of {total} bytes")
                    break
            except (_Retry, requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as exc:
                if isinstance(exc, _Restart):
                    _discard(part)
                    h, have = hashlib.sha256(), 0
                failures = 0 if have > start_have else failures + 1
                if failures > RETRIES:
                    raise DownloadError(
                        f"downloading {label} from {fetch_url} failed after {RETRIES} retries: {_short(exc)}"
                    ) from exc
                delay = min(BACKOFF_S * (2 ** max(failures - 1, 0)), BACKOFF_MAX_S)
                _warn(f"{label}: {_short(exc)}; resuming at {_fmt_size(have)} in {delay:g} s")
                time.sleep(delay)
            except requests.RequestException as exc:  # bad URL, too many redirects, …: not transient
                raise DownloadError(f"downloading {label} from {fetch_url} failed: {_short(exc)}") from exc
    finally:
        progress.stop()
        session.close()
    if total is not None and have != total:
        raise ChecksumError(f"{label}: received {have} bytes but the server announced {total}")
    return _Fetched(sha256=h.hexdigest(), size=have, server_sha256=server_sha)


def _part_meta(part: Path) -> Path:
    """The sidecar of a partial download: ``{"url", "validator"}`` (ETag or Last-Modified)."""
    return part.with_name(part.name + ".json")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _discard(part: Path) -> None:
    """Remove a partial download and its sidecar."""
    part.unlink(missing_ok=True)
    _part_meta(part).unlink(missing_ok=True)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _download(url: str, dest: Path, *, label: str, name: Optional[str], registry_sha: Optional[str],
              registry_size: Optional[int], recorded_sha: Optional[str], exclusive: bool) -> Path:
    """Fetch *url* to *dest*: temp file, hash, check, fsync, atomic rename, manifest record.

    The expected sha256 is the registry's, else the server's ``X-Linked-Etag``, else the one the
    manifest recorded at an earlier download, else none (this download's is recorded).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if exclusive:  # only we write it: a fixed name lets an interrupted download resume next time
        part = dest.parent / f".{dest.name}.part"
    else:  # no lock: a private temporary file, so concurrent writers never mix bytes
        part = dest.parent / f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    leftover = exclusive and part.exists() and part.stat().st_size > 0 and _part_meta(part).exists()

    def expectation(got: _Fetched) -> tuple[Optional[str], str]:
        if registry_sha:
            return registry_sha, "registry"
        if got.server_sha256:
            return got.server_sha256, "server"
        if recorded_sha:
            return recorded_sha, "manifest"
        return None, "first-download"

    try:
        got = _stream(url, part, label=label, expect_size=registry_size, resume=leftover)
        want, source = expectation(got)
        if want and got.sha256 != want:
            _discard(part)
            if not leftover:
                raise _mismatch(label, got.sha256, want, source)
            # the partial file may be from another version of the file: start once afresh
            _info(f"{label}: checksum mismatch after resuming an old partial download; downloading again")
            got = _stream(url, part, label=label, expect_size=registry_size, resume=False)
            want, source = expectation(got)
            if want and got.sha256 != want:
                _discard(part)
                raise _mismatch(label, got.sha256, want, source)
        os.replace(part, dest)
        _part_meta(part).unlink(missing_ok=True)
        _fsync_dir(dest.parent)
    except ChecksumError:
        _discard(part)
        raise
    except BaseException:
        if not exclusive:  # a private temp file cannot be resumed by anyone: remove it
            _discard(part)
        raise
    _record_file(dest, sha256=got.sha256, size=got.size, url=url, name=name, source=source)
    _memoise(dest, got.sha256)
    return dest


def _mismatch(label: str, got: str, want: str, source: str) -> ChecksumError:
    where = {"registry": "the registry", "server": "the server's X-Linked-Etag", "manifest": "the cache manifest"}[source]
    return ChecksumError(f"{label}: sha256 {got} does not match {want} from {where}; the download was removed")


def _check(path: Path, sha256: Optional[str], size: Optional[int], *, force: bool = False) -> Optional[str]:
    """None if *path* matches *size*/*sha256* (each when given), else what is wrong."""
    try:
        actual_size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size is not None and actual_size != size:
        return f"size {actual_size} != expected {size}"
    if sha256 is not None:
        digest = sha256_of(path, force=force)
        if digest != sha256:
            return f"sha256 {digest} != expected {sha256}"
    return None


def _expected(path: Path, entry: Optional[registry.Entry]) -> tuple[Optional[str], Optional[int], bool]:
    """(sha256, size, from_registry) a cache file must have: the registry's, else the manifest's."""
    rec = read_manifest()["files"].get(_rel(path)) or {}
    if entry is not None and entry.sha256:
        return entry.sha256, entry.size or rec.get("size"), True
    sha = rec.get("sha256") if isinstance(rec.get("sha256"), str) else None
    rsize = rec.get("size") if isinstance(rec.get("size"), int) else None
    return sha, (entry.size if entry is not None and entry.size else rsize), False


def _offline_error(label: str, dest: Path, hint: str, *, corrupt: Optional[str] = None) -> OfflineError:
    state = f"is corrupt in the cache ({corrupt})" if corrupt else "is not in the cache"
    return OfflineError(
        f"{label} {state} and offline mode is on (C2L_OFFLINE/HF_HUB_OFFLINE), so it cannot be downloaded; "
        f"run `c2l models download {hint}` on a connected machine and copy its cache "
        f"(`c2l models path {hint}`), or place the file at {dest}"
    )


def _ensure(url: str, dest: Path, *, label: str, name: Optional[str], hint: str,
            entry: Optional[registry.Entry]) -> Path:
    """*dest* present and verified, downloading *url* into it if needed."""
    sha, size, _ = _expected(dest, entry)
    if dest.exists():
        problem = _check(dest, sha, size)
        if problem is None:
            if sha is None:  # placed by hand: remember what it is now, verify against it later
                digest = sha256_of(dest)
                _record_file(dest, sha256=digest, size=dest.stat().st_size, url=url, name=name, source="first-seen")
            return dest
        if settings.offline():
            raise _offline_error(label, dest, hint, corrupt=problem)
        _warn(f"cached {label} is corrupt ({problem}); downloading it again")
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
    if settings.offline():
        raise _offline_error(label, dest, hint)
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = dest.parent / f".{dest.name}.lock"
    with _file_lock(lock, wait_message=f"waiting for another c2l process to finish downloading {label}") as exclusive:
        sha, size, from_registry = _expected(dest, entry)  # another process may have finished meanwhile
        if dest.exists() and _check(dest, sha, size) is None:
            return dest
        return _download(
            url, dest, label=label, name=name,
            registry_sha=sha if from_registry else None,
            registry_size=entry.size if entry is not None else None,
            recorded_sha=None if from_registry else sha,
            exclusive=exclusive,
        )


# --------------------------------------------------------------------------------------------
# public API


def fetch(name: str, *, with_requires: bool = True) -> Path:
    """Registry entry *name* in the cache, downloaded and verified if needed (not for ``clip``).

    Its ``requires`` come with it (unless *with_requires* is False): a prior checkpoint's YAML
    config lands beside it as ``<stem>.yaml``.
    """
    entry = registry.get(name)
    if entry.kind == "clip":
        raise UsageError(f"{name} is fetched by open_clip: use c2l_cli.clip.load_clip({entry.spec!r})")
    path = _ensure(entry.url, entry_path(name), label=name, name=name, hint=name, entry=entry)
    for dep in entry.requires if with_requires else ():
        fetch(dep)
    return path


def fetch_url(url: str) -> Path:
    """The file at an ``http(s)://`` *url*, downloaded into the cache (keyed by URL) if needed."""
    entry = _entry_for_url(url)
    if entry is not None:
        return fetch(entry.name)
    return _ensure(url, url_path(url), label=url, name=None, hint=url, entry=None)


def resolve(source: str | os.PathLike, *, kind: Optional[str] = None) -> Path:
    """A registry name, a local path or an ``http(s)://`` URL → a verified local file path.

    Registry names are looked up first (a bundle such as ``ffhq`` stands for its generator,
    prior or prior config when *kind* says which); write ``./NAME`` for a local file of the same
    name. A missing local path is a :class:`C2LError` naming it.
    """
    if isinstance(source, Path):
        return _local(source)
    text = os.fspath(source).strip()
    if not text:
        raise UsageError("empty model source (give a registry name, a path or a URL)")
    if text.startswith(("http://", "https://")):
        return fetch_url(text)
    if "/" not in text and os.sep not in text:
        name = registry.for_kind(text, kind)
        if name is not None:
            return fetch(name)
    return _local(Path(text), looks_like_name="/" not in text and os.sep not in text and "." not in text)


def _local(path: Path, *, looks_like_name: bool = False) -> Path:
    p = path.expanduser()
    if p.exists():
        return p
    if looks_like_name:
        raise C2LError(
            f"{str(path)!r} is neither a file nor a registry name "
            f"(names: {', '.join(registry.names())}; bundles: {', '.join(registry.bundle_names())})"
        )
    raise C2LError(f"no such file: {path}")


def is_cached(name: str) -> bool:
    """Whether registry entry *name* is in the cache (present and of the expected size; no re-hash)."""
    entry = registry.get(name)
    if entry.kind == "clip":
        return clip_is_cached(entry)
    path = entry_path(name)
    if not path.is_file():
        return False
    _, size, _ = _expected(path, entry)
    return size is None or path.stat().st_size == size


def clip_is_cached(entry: registry.Entry) -> bool:
    """Best effort: whether open_clip has the weights of a ``clip`` entry under clip_cache_dir()."""
    root = cache_root() / "open_clip"
    hf_id = urlsplit(entry.url).path.strip("/")
    hub = root / ("models--" + hf_id.replace("/", "--")) / "snapshots"
    if hub.is_dir() and any(p.is_file() for p in hub.rglob("*")):
        return True
    arch = (entry.spec or "").split(":", 1)[0]
    return bool(arch) and (root / f"{arch}.pt").is_file()


def status(name: str) -> dict[str, Any]:
    """A JSON-ready line of ``c2l models list``: the entry plus ``cached``, ``path`` and ``bundles``."""
    entry = registry.get(name)
    path = entry_path(name)
    row = entry.as_dict()
    row["cached"] = is_cached(name)
    row["path"] = str(path)
    row["bundles"] = registry.bundles_of(name)
    if entry.kind != "clip":
        rec = read_manifest()["files"].get(_rel(path)) or {}
        if row["size"] is None and row["cached"]:
            row["size"] = path.stat().st_size
        row["recorded_sha256"] = rec.get("sha256")
    return row


@dataclass
class VerifyResult:
    """One file checked by :func:`verify`."""

    path: Path  # the file
    name: Optional[str]  # registry name, if any
    status: str  # "ok", "bad", "recorded" (no reference before: its sha256 is now recorded) or "partial"
    detail: str  # what was found
    sha256: Optional[str] = None  # the file's sha256 (None for partial files)
    removed: bool = False  # removed because bad and remove=True

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "name": self.name, "status": self.status, "detail": self.detail,
                "sha256": self.sha256, "removed": self.removed}


def cached_files() -> list[Path]:
    """Every file under ``models/`` and ``urls/`` in the cache, partial downloads included."""
    out: list[Path] = []
    for sub in ("models", "urls"):
        base = cache_root() / sub
        if base.is_dir():
            out.extend(sorted(p for p in base.rglob("*")
                              if p.is_file() and not p.name.endswith((".lock", ".part.json"))))
    return out


def verify(*, remove: bool = False) -> list[VerifyResult]:
    """Re-hash every cached file against the registry or the manifest; optionally remove bad ones."""
    by_path = {entry_path(e.name).resolve(): e for e in registry.ENTRIES.values() if e.kind != "clip"}
    results = []
    for path in cached_files():
        entry = by_path.get(path.resolve())
        name = entry.name if entry else None
        if path.name.startswith(".") and path.name.endswith(".part"):
            results.append(VerifyResult(path, name, "partial",
                                        f"interrupted download ({_fmt_size(path.stat().st_size)}); resumes on next download"))
            continue
        sha, size, _ = _expected(path, entry)
        digest = sha256_of(path, force=True)
        if sha is None:
            rec = read_manifest()["files"].get(_rel(path)) or {}
            _record_file(path, sha256=digest, size=path.stat().st_size, url=rec.get("url") or (entry.url if entry else None),
                         name=name, source="first-seen")
            results.append(VerifyResult(path, name, "recorded", "no reference checksum; recorded this one", digest))
            continue
        problem = None
        if size is not None and path.stat().st_size != size:
            problem = f"size {path.stat().st_size} != expected {size}"
        elif digest != sha:
            problem = f"sha256 {digest} != expected {sha}"
        if problem is None:
            results.append(VerifyResult(path, name, "ok", "sha256 matches", digest))
            continue
        res = VerifyResult(path, name, "bad", problem, digest)
        if remove:
            path.unlink(missing_ok=True)
            # keep the manifest's expected sha256 (the next download is checked against it), drop the memo
            key = str(path.resolve())
            _update_manifest(lambda m: m["hashes"].pop(key, None))
            res.removed = True
        results.append(res)
    return results


def remove(name_or_url: str) -> bool:
    """Delete a cached file and its manifest record; True if something was removed."""
    path = url_path(name_or_url) if name_or_url.startswith(("http://", "https://")) else entry_path(name_or_url)
    existed = path.is_file()
    path.unlink(missing_ok=True)
    _forget_file(path)
    return existed
