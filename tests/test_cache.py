"""The download cache against a local HTTP server (C2L_MIRROR points at it): no real network."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from c2l_cli import cache, registry
from c2l_cli.errors import C2LError, ChecksumError, DownloadError, OfflineError, UsageError

AGE_URL = registry.get("direction-age").url


def payload(n: int, seed: int = 0) -> bytes:
    """Deterministic incompressible-looking bytes."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(path: Path) -> list[str]:
    """Temporary files beside *path* (lock files are expected and harmless)."""
    return sorted(p.name for p in path.parent.iterdir() if ".part" in p.name or ".tmp" in p.name)


def set_entry(monkeypatch, name: str, **changes) -> None:
    monkeypatch.setitem(registry.ENTRIES, name, dataclasses.replace(registry.ENTRIES[name], **changes))


def test_mirror_rewrites_host_and_path(monkeypatch):
    monkeypatch.setenv("C2L_MIRROR", "http://mirror.local/base/")
    assert cache.mirror_url("https://huggingface.co/a/b.ckpt?x=1") == "http://mirror.local/base/huggingface.co/a/b.ckpt?x=1"
    monkeypatch.delenv("C2L_MIRROR")
    assert cache.mirror_url("https://huggingface.co/a/b.ckpt") == "https://huggingface.co/a/b.ckpt"


def test_cache_root_and_clip_dir_follow_env(tmp_path, monkeypatch):
    monkeypatch.setenv("C2L_CACHE_DIR", str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c"
    assert cache.clip_cache_dir() == tmp_path / "c" / "open_clip"
    assert cache.clip_cache_dir().is_dir()
    assert cache.entry_path("direction-age") == tmp_path / "c" / "models" / "direction-age" / "age.pt"


def test_download_verify_and_reuse(server):
    data = payload(300_000)
    server.add_url(AGE_URL, data)
    path = cache.resolve("direction-age")
    assert path == cache.entry_path("direction-age")
    assert path.read_bytes() == data
    rec = cache.read_manifest()["files"]["models/direction-age/age.pt"]
    assert rec["sha256"] == sha(data) and rec["size"] == len(data) and rec["source"] == "first-download"
    assert leftovers(path) == []
    # the second call is served from the cache
    assert cache.resolve("direction-age") == path
    assert cache.resolve("age", kind="direction") == path
    assert len(server.gets("age.pt")) == 1
    assert cache.is_cached("direction-age")


def test_registry_checksum_verified(server, monkeypatch):
    data = payload(50_000)
    set_entry(monkeypatch, "direction-age", sha256=sha(data), size=len(data))
    server.add_url(AGE_URL, data)
    path = cache.resolve("direction-age")
    assert path.read_bytes() == data
    assert cache.read_manifest()["files"]["models/direction-age/age.pt"]["source"] == "registry"


def test_wrong_checksum_is_an_error_and_leaves_no_file(server, monkeypatch):
    set_entry(monkeypatch, "direction-age", sha256="0" * 64)
    server.add_url(AGE_URL, payload(50_000))
    with pytest.raises(ChecksumError, match="does not match"):
        cache.resolve("direction-age")
    dest = cache.entry_path("direction-age")
    assert not dest.exists()
    assert leftovers(dest) == []
    assert not cache.is_cached("direction-age")


def test_wrong_size_is_an_error(server, monkeypatch):
    set_entry(monkeypatch, "direction-age", size=123)
    server.add_url(AGE_URL, payload(50_000))
    with pytest.raises(ChecksumError, match="123"):
        cache.resolve("direction-age")
    assert not cache.entry_path("direction-age").exists()


def test_connection_cut_mid_file_resumes_with_range(server):
    data = payload(1_000_000)
    server.add_url(AGE_URL, data, cut_after=300_000, cut_times=2)
    path = cache.resolve("direction-age")
    assert path.read_bytes() == data
    ranges = [r.range for r in server.gets("age.pt")]
    assert len(ranges) == 3 and ranges[0] is None
    # each retry resumes where the received bytes end (a read cut short loses < one 64 KiB chunk)
    first = int(ranges[1][len("bytes="):-1])
    second = int(ranges[2][len("bytes="):-1])
    assert 300_000 - cache.NET_CHUNK < first <= 300_000
    assert first + 300_000 - cache.NET_CHUNK < second <= first + 300_000
    assert leftovers(path) == []


def test_server_ignoring_range_restarts_cleanly(server):
    data = payload(700_000)
    server.add_url(AGE_URL, data, cut_after=250_000, ignore_range=True)
    path = cache.resolve("direction-age")
    assert path.read_bytes() == data
    gets = server.gets("age.pt")
    assert len(gets) == 2 and gets[1].range.startswith("bytes=")  # asked to resume, got the whole file
    assert cache.read_manifest()["files"]["models/direction-age/age.pt"]["sha256"] == sha(data)


def test_interrupted_download_resumes_next_time(server):
    data = payload(400_000)
    server.add_url(AGE_URL, data)
    dest = cache.entry_path("direction-age")
    dest.parent.mkdir(parents=True)
    (dest.parent / ".age.pt.part").write_bytes(data[:150_000])  # left by a killed process
    (dest.parent / ".age.pt.part.json").write_text(json.dumps({"url": AGE_URL, "validator": '"v1"'}))
    assert cache.resolve("direction-age").read_bytes() == data
    assert [r.range for r in server.gets("age.pt")] == ["bytes=150000-"]
    assert leftovers(dest) == []


def test_partial_file_of_another_url_is_not_resumed(server):
    data = payload(400_000)
    server.add_url(AGE_URL, data)
    dest = cache.entry_path("direction-age")
    dest.parent.mkdir(parents=True)
    (dest.parent / ".age.pt.part").write_bytes(payload(150_000, seed=4))
    (dest.parent / ".age.pt.part.json").write_text(json.dumps({"url": "https://elsewhere/age.pt"}))
    assert cache.resolve("direction-age").read_bytes() == data
    assert [r.range for r in server.gets("age.pt")] == [None]
    assert leftovers(dest) == []


def test_interrupted_process_leaves_a_resumable_partial_file(server, monkeypatch):
    data = payload(500_000)
    server.add_url(AGE_URL, data, cut_after=200_000, cut_times=1)
    real_sleep = cache.time.sleep

    def ctrl_c(_s):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.time, "sleep", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        cache.resolve("direction-age")  # Ctrl-C while waiting to retry
    dest = cache.entry_path("direction-age")
    assert not dest.exists()
    assert leftovers(dest) == [".age.pt.part", ".age.pt.part.json"]
    monkeypatch.setattr(cache.time, "sleep", real_sleep)
    assert cache.resolve("direction-age").read_bytes() == data
    assert server.gets("age.pt")[-1].range.startswith("bytes=1")
    assert leftovers(dest) == []


def test_stale_partial_file_of_another_version_is_discarded(server):
    data = payload(400_000)
    server.add_url(AGE_URL, data, linked_etag=sha(data))
    dest = cache.entry_path("direction-age")
    dest.parent.mkdir(parents=True)
    (dest.parent / ".age.pt.part").write_bytes(payload(150_000, seed=9))
    (dest.parent / ".age.pt.part.json").write_text(json.dumps({"url": AGE_URL}))
    assert cache.resolve("direction-age").read_bytes() == data


def test_server_advertised_sha256_is_used(server):
    data = payload(80_000)
    server.add_url(AGE_URL, data, linked_etag=sha(data))
    path = cache.resolve("direction-age")
    assert path.read_bytes() == data
    assert cache.read_manifest()["files"]["models/direction-age/age.pt"]["source"] == "server"
    assert any(r.path.startswith("/_cdn/") for r in server.gets())


def test_server_advertised_sha256_mismatch(server):
    server.add_url(AGE_URL, payload(80_000), linked_etag="f" * 64)
    with pytest.raises(ChecksumError, match="X-Linked-Etag"):
        cache.resolve("direction-age")
    assert not cache.entry_path("direction-age").exists()
    assert leftovers(cache.entry_path("direction-age")) == []


@pytest.mark.parametrize("damage", ["same-size", "truncated"])
def test_corrupted_cache_file_is_detected_and_refetched(server, damage):
    data = payload(200_000)
    server.add_url(AGE_URL, data)
    path = cache.resolve("direction-age")
    if damage == "same-size":
        with open(path, "r+b") as fh:
            fh.seek(1000)
            fh.write(b"\xff" * 64)
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # a real edit bumps mtime
    else:
        path.write_bytes(data[:1000])
    again = cache.resolve("direction-age")
    assert again.read_bytes() == data
    assert len(server.gets("age.pt")) == 2


def test_refetch_is_checked_against_the_first_download(server):
    data = payload(60_000)
    server.add_url(AGE_URL, data)
    path = cache.resolve("direction-age")
    path.write_bytes(b"x")  # corrupt it, and let the server now serve something else
    server.add_url(AGE_URL, payload(60_000, seed=3))
    with pytest.raises(ChecksumError, match="cache manifest"):
        cache.resolve("direction-age")
    assert not path.exists()


def test_offline_with_cached_file_does_not_touch_network(server, monkeypatch):
    data = payload(10_000)
    server.add_url(AGE_URL, data)
    path = cache.resolve("direction-age")
    n = len(server.log)
    monkeypatch.setenv("C2L_OFFLINE", "1")
    assert cache.resolve("direction-age") == path
    assert len(server.log) == n


@pytest.mark.parametrize("var", ["C2L_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_without_file_is_a_clear_error(server, monkeypatch, var):
    server.add_url(AGE_URL, payload(10_000))
    monkeypatch.setenv(var, "1")
    with pytest.raises(OfflineError) as info:
        cache.resolve("direction-age")
    msg = str(info.value)
    assert "direction-age" in msg
    assert "c2l models download direction-age" in msg
    assert str(cache.entry_path("direction-age")) in msg
    assert server.log == []


def test_offline_accepts_a_file_placed_by_hand(monkeypatch):
    monkeypatch.setenv("C2L_OFFLINE", "1")
    dest = cache.entry_path("direction-smile")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"placed")
    assert cache.resolve("direction-smile") == dest
    assert cache.read_manifest()["files"]["models/direction-smile/smile.pt"]["source"] == "first-seen"


def test_url_source_is_cached_by_url(server):
    url = "https://example.org/weights/my-net.pkl"
    data = payload(30_000)
    server.add_url(url, data)
    path = cache.resolve(url)
    assert path.name == "my-net.pkl" and path.parent.parent == cache.cache_root() / "urls"
    assert path.read_bytes() == data
    assert cache.resolve(url) == path
    assert len(server.gets("my-net.pkl")) == 1


def test_registry_url_shares_the_registry_file(server):
    server.add_url(AGE_URL, payload(1000))
    assert cache.resolve(AGE_URL) == cache.entry_path("direction-age")


def test_bundle_names_resolve_by_kind(server):
    for name in ("stylegan2-ffhq-1024", "prior-ffhq-sg2-510", "prior-ffhq-sg2-510-yaml"):
        server.add_url(registry.get(name).url, name.encode())
    assert cache.resolve("ffhq", kind="generator").read_bytes() == b"stylegan2-ffhq-1024"
    assert cache.resolve("ffhq", kind="prior-ckpt").read_bytes() == b"prior-ffhq-sg2-510"
    assert cache.resolve("ffhq", kind="prior-yaml").read_bytes() == b"prior-ffhq-sg2-510-yaml"
    with pytest.raises(UsageError, match="not a prior-ckpt"):
        cache.resolve("direction-age", kind="prior")


def test_local_paths(tmp_path):
    f = tmp_path / "g.pkl"
    f.write_bytes(b"x")
    assert cache.resolve(f) == f
    assert cache.resolve(str(f)) == f
    with pytest.raises(C2LError, match="no such file: .*missing.pkl"):
        cache.resolve(str(tmp_path / "missing.pkl"))
    with pytest.raises(C2LError, match="neither a file nor a registry name"):
        cache.resolve("no-such-model")


def test_http_error_is_a_download_error(server):
    with pytest.raises(DownloadError, match="404"):
        cache.resolve("direction-pose")  # not served
    assert not cache.entry_path("direction-pose").exists()


def test_transient_http_error_is_retried(server):
    data = payload(5000)
    server.add_url(AGE_URL, data, fail_status=503, fail_times=2)
    assert cache.resolve("direction-age").read_bytes() == data
    assert len(server.gets("age.pt")) == 3


def test_retries_are_bounded(server, monkeypatch):
    monkeypatch.setattr(cache, "RETRIES", 2)
    server.add_url(AGE_URL, payload(5000), cut_after=0, cut_times=100)
    with pytest.raises(DownloadError, match="after 2 retries"):
        cache.resolve("direction-age")
    assert len(server.gets("age.pt")) == 3
    assert not cache.entry_path("direction-age").exists()


_CHILD = """
import sys
from c2l_cli import cache
print(cache.resolve("direction-age"))
"""


def test_two_processes_end_with_one_good_file(server):
    data = payload(2_000_000)
    server.add_url(AGE_URL, data, delay_s=0.02)  # ~0.6 s per download: the two overlap
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    dest = cache.entry_path("direction-age")
    assert {o.strip() for o, _ in outs} == {str(dest)}
    assert dest.read_bytes() == data
    assert leftovers(dest) == []
    # the lock made the second process wait and reuse the first one's file
    if hasattr(os, "fork"):
        assert len(server.gets("age.pt")) == 1
    assert json.loads((cache.cache_root() / "manifest.json").read_text())["files"]["models/direction-age/age.pt"]["sha256"] == sha(data)


def test_correct_without_the_lock(server, monkeypatch):
    """Where locking is unavailable, concurrent downloads still end with one good file."""

    @contextlib.contextmanager
    def no_lock(*a, **k):
        yield False

    monkeypatch.setattr(cache, "_file_lock", no_lock)
    data = payload(1_000_000)
    server.add_url(AGE_URL, data, delay_s=0.01)
    results, errors = [], []

    def work():
        try:
            results.append(cache.resolve("direction-age"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    dest = cache.entry_path("direction-age")
    assert results == [dest] * 3
    assert dest.read_bytes() == data
    assert leftovers(dest) == []


def test_sha256_of_is_memoised(tmp_path, monkeypatch):
    f = tmp_path / "f.bin"
    f.write_bytes(b"hello")
    assert cache.sha256_of(f) == sha(b"hello")
    assert cache.read_manifest()["hashes"][str(f.resolve())]["sha256"] == sha(b"hello")
    calls = []
    real = cache._hash_file
    monkeypatch.setattr(cache, "_hash_file", lambda p: calls.append(p) or real(p))
    assert cache.sha256_of(f) == sha(b"hello")
    assert calls == []  # served from the memo
    f.write_bytes(b"hello world")
    assert cache.sha256_of(f) == sha(b"hello world")
    assert len(calls) == 1
    assert cache.sha256_of(f, force=True) == sha(b"hello world")
    assert len(calls) == 2
    with pytest.raises(C2LError, match="no such file"):
        cache.sha256_of(tmp_path / "nope")


def test_damaged_manifest_is_tolerated(server):
    root = cache.cache_root()
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text("{not json")
    server.add_url(AGE_URL, b"abc")
    assert cache.resolve("direction-age").read_bytes() == b"abc"
    assert "models/direction-age/age.pt" in cache.read_manifest()["files"]


def test_verify_reports_and_removes_bad_files(server):
    server.add_url(AGE_URL, payload(1000))
    server.add_url(registry.get("direction-smile").url, payload(1000, seed=1))
    age = cache.resolve("direction-age")
    cache.resolve("direction-smile")
    age.write_bytes(b"broken")
    results = {r.name: r for r in cache.verify()}
    assert results["direction-age"].status == "bad"
    assert results["direction-smile"].status == "ok"
    assert age.exists()
    results = {r.name: r for r in cache.verify(remove=True)}
    assert results["direction-age"].removed and not age.exists()
    # its expected sha256 is kept, so the re-download is still checked
    assert cache.resolve("direction-age").read_bytes() == payload(1000)


def test_progress_bar_on_a_terminal(server, monkeypatch):
    import io

    from rich.console import Console

    from c2l_cli.cli import output

    buf = io.StringIO()
    monkeypatch.setattr(output, "stderr_console", lambda: Console(file=buf, force_terminal=True, width=120))
    data = payload(300_000)
    server.add_url(AGE_URL, data)
    assert cache.resolve("direction-age").read_bytes() == data
    text = buf.getvalue()
    assert "direction-age" in text and "300.0/300.0 kB" in text and "/s" in text  # bytes, speed
