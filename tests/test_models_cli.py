"""`c2l models list/download/verify/path` against a local HTTP server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from c2l_cli import cache, registry
from c2l_cli.cli.app import app
from httpserver import FileServer

runner = CliRunner()


def serve(srv: FileServer, *names: str) -> dict[str, bytes]:
    data = {}
    for n in names:
        data[n] = f"contents of {n}".encode() * 100
        srv.add_url(registry.get(n).url, data[n])
    return data


def run(*args: str):
    return runner.invoke(app, list(args))


def test_list_table_and_json(server):
    serve(server, "direction-age")
    assert run("models", "download", "age").exit_code == 0
    r = run("models", "list")
    assert r.exit_code == 0, r.stderr
    for name in registry.names():
        assert name in r.stdout
    assert "ffhq (default)" in r.stdout
    r = run("models", "list", "--json")
    doc = json.loads(r.stdout)
    rows = {row["name"]: row for row in doc["models"]}
    assert set(rows) == set(registry.names())
    assert rows["direction-age"]["cached"] is True and rows["direction-age"]["size"] == len("contents of direction-age") * 100
    assert rows["direction-smile"]["cached"] is False
    assert rows["stylegan2-ffhq-1024"]["licence"].startswith("NVIDIA")
    assert doc["bundles"]["ffhq"]["default"] is True
    assert doc["cache_dir"] == str(cache.cache_root())


def test_download_names_bundles_and_json(server):
    data = serve(server, "prior-lhq-sg3-410", "prior-lhq-sg3-410-yaml", "direction-pose")
    r = run("models", "download", "prior-lhq-sg3-410", "pose", "--json")
    assert r.exit_code == 0, r.stderr
    res = {x["name"]: x for x in json.loads(r.stdout)}
    assert set(res) == {"prior-lhq-sg3-410", "prior-lhq-sg3-410-yaml", "direction-pose"}
    assert all(x["status"] == "downloaded" for x in res.values())
    for name, blob in data.items():
        assert cache.entry_path(name).read_bytes() == blob
    # config beside its checkpoint
    ckpt = cache.entry_path("prior-lhq-sg3-410")
    assert ckpt.with_suffix(".yaml") == cache.entry_path("prior-lhq-sg3-410-yaml")
    r = run("models", "download", "direction-pose")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"direction-pose\t{cache.entry_path('direction-pose')}"
    assert "already cached" in r.stderr


def test_download_bundle_skips_or_loads_clip(server, monkeypatch):
    """A bundle brings generator, prior, config and CLIP; CLIP goes through c2l_cli.clip.load_clip."""
    serve(server, "stylegan2-ffhq-1024", "prior-ffhq-sg2-510", "prior-ffhq-sg2-510-yaml")
    import importlib.util
    import sys
    import types

    calls = []
    fake = types.ModuleType("c2l_cli.clip")
    fake.load_clip = lambda spec, device=None, dtype=None: calls.append((spec, device))
    monkeypatch.setitem(sys.modules, "c2l_cli.clip", fake)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    r = run("models", "download", "ffhq", "--json")
    assert r.exit_code == 0, r.stderr
    res = {x["name"]: x for x in json.loads(r.stdout)}
    assert list(res) == registry.expand("ffhq")
    assert calls == [("ViT-B-32:openai", "cpu")]
    assert res["clip-vit-b-32-openai"]["path"] == str(cache.clip_cache_dir())


def test_download_unknown_name_is_a_usage_error():
    r = run("models", "download", "no-such-model")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: unknown model 'no-such-model'")
    r = run("models", "download")
    assert r.exit_code == 2


def test_download_offline_is_exit_1(monkeypatch):
    monkeypatch.setenv("C2L_OFFLINE", "1")
    r = run("models", "download", "direction-age")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: direction-age is not in the cache")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_download_checksum_failure_is_exit_1(server, monkeypatch):
    import dataclasses

    monkeypatch.setitem(registry.ENTRIES, "direction-age",
                        dataclasses.replace(registry.ENTRIES["direction-age"], sha256="1" * 64))
    serve(server, "direction-age")
    r = run("models", "download", "direction-age")
    assert r.exit_code == 1
    assert "does not match" in r.stderr
    assert not cache.entry_path("direction-age").exists()


def test_path(server):
    serve(server, "direction-smile")
    r = run("models", "path", "direction-smile")
    assert r.exit_code == 1 and "not cached" in r.stderr and "--download" in r.stderr
    r = run("models", "path", "direction-smile", "--download")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(cache.entry_path("direction-smile"))
    r = run("models", "path", "smile")
    assert r.stdout.strip() == str(cache.entry_path("direction-smile"))
    r = run("models", "path")
    assert r.stdout.strip() == str(cache.cache_root())
    url = "https://example.org/x/net.pkl"
    server.add_url(url, b"net")
    assert run("models", "path", url).exit_code == 1
    r = run("models", "path", url, "--download")
    assert r.exit_code == 0 and open(r.stdout.strip(), "rb").read() == b"net"


def test_verify_ok_bad_and_remove(server):
    data = serve(server, "direction-age", "direction-smile")
    assert run("models", "download", "age", "smile").exit_code == 0
    r = run("models", "verify")
    assert r.exit_code == 0, r.stderr
    assert "none bad" in r.stderr
    cache.entry_path("direction-age").write_bytes(b"rotten")
    r = run("models", "verify", "--json")
    assert r.exit_code == 1
    res = {x["name"]: x for x in json.loads(r.stdout)}
    assert res["direction-age"]["status"] == "bad" and res["direction-smile"]["status"] == "ok"
    assert "1 cached file(s) failed verification" in r.stderr and "direction-age" in r.stderr
    assert cache.entry_path("direction-age").exists()
    r = run("models", "verify", "--remove")
    assert r.exit_code == 1 and "removed" in r.stdout
    assert not cache.entry_path("direction-age").exists()
    assert run("models", "verify").exit_code == 0
    # next use fetches it again and checks it against the first download's sha256
    assert cache.resolve("direction-age").read_bytes() == data["direction-age"]


def test_verify_empty_cache():
    r = run("models", "verify")
    assert r.exit_code == 0 and "empty" in r.stderr
