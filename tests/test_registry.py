"""The registry table and bundles."""

from __future__ import annotations

import re

import pytest

from c2l_cli import registry
from c2l_cli.errors import UsageError

API_NAMES = [
    "stylegan2-ffhq-1024", "stylegan3-t-lhq-256", "prior-ffhq-sg2-510", "prior-ffhq-sg2-510-yaml",
    "prior-lhq-sg3-410", "prior-lhq-sg3-410-yaml", "direction-age", "direction-smile", "direction-pose",
]


def test_every_documented_name_is_registered():
    for name in API_NAMES:
        assert registry.is_registry_name(name)
        assert registry.get(name).name == name


def test_entries_are_well_formed():
    for e in registry.ENTRIES.values():
        assert e.kind in registry.KINDS
        assert e.url.startswith("https://")
        assert e.licence and e.description
        assert e.size is None or (isinstance(e.size, int) and e.size > 0)
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256)
        for dep in e.requires:
            assert dep in registry.ENTRIES
        if e.kind == "clip":
            assert e.spec and ":" in e.spec
        else:
            assert "." in e.file_name


def test_urls_from_the_issue():
    assert registry.get("stylegan2-ffhq-1024").url == (
        "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/stylegan2-ffhq-1024x1024.pkl")
    assert registry.get("stylegan3-t-lhq-256").url == (
        "https://huggingface.co/justinpinkney/stylegan3-t-lhq-256/resolve/main/lhq-256-stylegan3-t-25Mimg.pkl")
    assert registry.get("prior-ffhq-sg2-510").url == "https://huggingface.co/lambdalabs/clip2latent/resolve/main/ffhq-sg2-510.ckpt"
    assert registry.get("prior-lhq-sg3-410-yaml").url.endswith("/lhq-sg3-410.yaml")
    assert registry.get("direction-smile").url == "https://github.com/justinpinkney/clip2latent/raw/main/directions/smile.pt"


def test_bundles():
    b = registry.bundle()
    assert b == registry.bundle("ffhq")
    assert (b.generator, b.prior, b.clip) == ("stylegan2-ffhq-1024", "prior-ffhq-sg2-510", "ViT-B-32:openai")
    lhq = registry.bundle("lhq")
    assert (lhq.generator, lhq.prior, lhq.clip) == ("stylegan3-t-lhq-256", "prior-lhq-sg3-410", "ViT-B-32:openai")
    with pytest.raises(UsageError, match="unknown model bundle"):
        registry.bundle("cats")
    assert registry.bundle_names()[0] == "ffhq"


def test_expand_and_companions():
    assert registry.expand("ffhq") == [
        "stylegan2-ffhq-1024", "prior-ffhq-sg2-510", "prior-ffhq-sg2-510-yaml", "clip-vit-b-32-openai"]
    assert registry.expand("prior-lhq-sg3-410") == ["prior-lhq-sg3-410", "prior-lhq-sg3-410-yaml"]
    assert registry.expand("age") == ["direction-age"]
    assert registry.companion_config("prior-ffhq-sg2-510") == "prior-ffhq-sg2-510-yaml"
    assert registry.companion_config("direction-age") is None
    # a prior's config sits in the same cache folder as its checkpoint
    assert registry.get("prior-ffhq-sg2-510-yaml").folder_name == registry.get("prior-ffhq-sg2-510").folder_name
    assert registry.bundles_of("prior-ffhq-sg2-510-yaml") == ["ffhq"]
    assert registry.bundles_of("clip-vit-b-32-openai") == ["ffhq", "lhq"]


def test_names_and_kinds():
    assert registry.names("direction") == ["direction-age", "direction-smile", "direction-pose"]
    assert registry.names("generator") == ["stylegan2-ffhq-1024", "stylegan3-t-lhq-256"]
    assert registry.names() == list(registry.ENTRIES)
    with pytest.raises(UsageError, match="unknown model kind"):
        registry.names("banana")
    with pytest.raises(UsageError, match="unknown model 'x'"):
        registry.get("x")
    assert not registry.is_registry_name("ffhq") and registry.is_bundle_name("ffhq")


def test_for_kind():
    assert registry.for_kind("ffhq", "generator") == "stylegan2-ffhq-1024"
    assert registry.for_kind("lhq", "prior") == "prior-lhq-sg3-410"
    assert registry.for_kind("lhq", "prior-yaml") == "prior-lhq-sg3-410-yaml"
    assert registry.for_kind("smile", "direction") == "direction-smile"
    assert registry.for_kind("direction-age", None) == "direction-age"
    assert registry.for_kind("not-a-name", None) is None
    with pytest.raises(UsageError, match="not a stylegan-pkl"):
        registry.for_kind("prior-ffhq-sg2-510", "generator")


def test_registry_stays_light():
    import subprocess
    import sys

    code = "import sys, c2l_cli.registry, c2l_cli.cache; print(any(m in sys.modules for m in ('torch', 'requests', 'rich.progress')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
