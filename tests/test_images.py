"""c2l_cli.images: tensor → PIL, atomic saving with the recipe embedded, grids, unique names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from c2l_cli.errors import C2LError, FormatError, UsageError
from c2l_cli.images import (
    RECIPE_KEY,
    make_grid,
    read_recipe,
    save_image,
    slugify,
    to_pil,
    unique_path,
)


def _img(seed: int = 0, size: int = 16) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return to_pil(torch.rand(1, 3, size, size, generator=g) * 2 - 1)[0]


def test_to_pil_matches_nvidia_conversion():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 6).expand(2, 3, 1, 6).clone()
    ims = to_pil(x)
    assert len(ims) == 2 and ims[0].mode == "RGB" and ims[0].size == (6, 1)
    got = np.asarray(ims[1])[0, :, 0]
    # NVIDIA: (x * 127.5 + 128).clamp(0, 255).to(uint8)
    want = (x[0, 0, 0] * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    assert got.tolist() == want.tolist() == [0, 0, 128, 191, 255, 255]
    assert to_pil(x[0])[0].size == (6, 1)  # a single [3, H, W] image
    assert to_pil(np.zeros((1, 1, 4, 4)))[0].mode == "L"
    with pytest.raises(UsageError):
        to_pil(torch.zeros(2, 4, 4))


def test_png_recipe_roundtrip_and_text_chunks(tmp_path):
    im = _img()
    recipe = {"prompt": "an old man — ünïcode", "seed": 7, "settings": {"steps": 4}}
    path = save_image(im, tmp_path / "a.png", metadata={RECIPE_KEY: recipe, "c2l:prompt": recipe["prompt"]})
    assert path == tmp_path / "a.png"
    assert read_recipe(path) == recipe
    with Image.open(path) as back:
        assert back.text["c2l:prompt"] == recipe["prompt"]
        assert json.loads(back.text[RECIPE_KEY]) == recipe
        assert np.array_equal(np.asarray(back.convert("RGB")), np.asarray(im))  # lossless
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temp file left


@pytest.mark.parametrize("fmt,suffix", [("jpg", ".jpg"), ("webp", ".webp")])
def test_lossy_formats_keep_the_recipe(tmp_path, fmt, suffix):
    recipe = {"prompt": "a red car", "seed": 3}
    path = save_image(_img(), tmp_path / f"x{suffix}", metadata={RECIPE_KEY: recipe}, format=fmt)
    with Image.open(path) as back:
        assert back.format == {"jpg": "JPEG", "webp": "WEBP"}[fmt]
    assert read_recipe(path) == recipe


def test_size_downscales_only(tmp_path):
    im = _img(size=32)
    p = save_image(im, tmp_path / "s.png", size=16)
    with Image.open(p) as back:
        assert back.size == (16, 16)
    with pytest.raises(UsageError, match="only downscales"):
        save_image(im, tmp_path / "t.png", size=64)
    assert not (tmp_path / "t.png").exists()


def test_bad_format_and_missing_recipe(tmp_path):
    with pytest.raises(UsageError):
        save_image(_img(), tmp_path / "x.gif")
    plain = tmp_path / "plain.png"
    _img().save(plain)
    with pytest.raises(FormatError, match="no c2l recipe"):
        read_recipe(plain)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(FormatError, match="not an image"):
        read_recipe(tmp_path / "junk.png")
    with pytest.raises(FormatError, match="no such file"):
        read_recipe(tmp_path / "missing.png")


def test_unwritable_target_is_one_error_and_no_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(C2LError, match="cannot write"):
        save_image(_img(), blocker / "sub" / "a.png")


def test_make_grid_layout_and_labels():
    ims = [_img(i) for i in range(5)]
    grid = make_grid(ims, ncols=3, padding=0)
    assert grid.size == (48, 32)
    # cell (row 1, col 1) holds image 4
    assert np.array_equal(np.asarray(grid)[16:32, 16:32], np.asarray(ims[4]))
    labelled = make_grid(ims, ncols=5, labels=[f"#{i}" for i in range(5)])
    assert labelled.width == 5 * 16 + 6 * 2 and labelled.height > 16 + 4
    band = np.asarray(labelled)[2 + 16 :, :]
    assert (band < 128).any()  # text was drawn under the cells
    assert make_grid(ims).size == (3 * 16 + 4 * 2, 2 * 16 + 3 * 2)  # default near-square
    with pytest.raises(UsageError):
        make_grid(ims, labels=["a"])
    with pytest.raises(UsageError):
        make_grid([])


def test_unique_path_never_overwrites(tmp_path):
    p = unique_path(tmp_path, "a", ".png")
    assert p == tmp_path / "a.png"
    p.write_bytes(b"")
    assert unique_path(tmp_path, "a", ".png") == tmp_path / "a-1.png"
    (tmp_path / "a-1.npz").write_bytes(b"")
    assert unique_path(tmp_path, "a", ".png", also=[".npz"]) == tmp_path / "a-2.png"


def test_slugify():
    assert slugify("An old man, with a BEARD!") == "an-old-man-with-a-beard"
    assert slugify("Café crème") == "cafe-creme"
    assert slugify("!!!") == "image"
    long = slugify("word " * 40)
    assert len(long) <= 48 and not long.endswith("-")
