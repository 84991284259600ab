"""Images and recipes: tensors → PIL, atomic saving with the recipe embedded, contact sheets.

A *recipe* is the JSON document that says how an image was made (prompt, seed, models and their
sha256, every control, the c2l version). :func:`save_image` stores it in the file itself: in PNG as
the text chunk ``c2l:recipe`` (beside one text chunk per other metadata key), in JPEG/WebP as the
EXIF ``ImageDescription``. :func:`read_recipe` reads it back, which is what ``c2l sample --replay``
uses to regenerate an image.
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .errors import FormatError, UsageError
from .fsutil import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from PIL import Image

#: Text-chunk key of the JSON recipe in PNG files.
RECIPE_KEY = "c2l:recipe"
#: EXIF tag (ImageDescription) that holds the recipe in JPEG and WebP files.
_EXIF_DESCRIPTION = 0x010E

#: ``--format`` value → (PIL format name, file suffix).
FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}
#: Quality of the lossy formats (JPEG, WebP): high enough that re-ranking scores barely move.
LOSSY_QUALITY = 95


def to_pil(images: "torch.Tensor | np.ndarray") -> "list[Image.Image]":
    """Generator output ``[B, 3, H, W]`` (or ``[3, H, W]``) in [-1, 1] → RGB PIL images.

    Uses NVIDIA's conversion (``x * 127.5 + 128``, clamped, truncated to uint8), so files match
    those written by the StyleGAN reference scripts. Single-channel input gives grayscale images.
    """
    import numpy as np
    from PIL import Image

    if hasattr(images, "detach"):
        arr = images.detach().float().cpu().numpy()
    else:
        arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise UsageError(f"expected images of shape [B, 3, H, W] in [-1, 1], got {list(arr.shape)}")
    arr = np.clip(arr * 127.5 + 128.0, 0, 255).astype(np.uint8)  # (B, C, H, W)
    arr = arr.transpose(0, 2, 3, 1)  # (B, H, W, C)
    if arr.shape[-1] == 1:
        return [Image.fromarray(a[..., 0], mode="L") for a in arr]
    return [Image.fromarray(a, mode="RGB") for a in arr]


def image_format(path: str | os.PathLike, format: str | None = None) -> tuple[str, str]:
    """(PIL format name, suffix) for *format* (``png``/``jpg``/``webp``) or, when None, *path*'s suffix."""
    key = (format or Path(path).suffix.lstrip(".")).lower()
    if key not in FORMATS:
        choices = "png, jpg, webp"
        what = f"format {format!r}" if format else f"file suffix {Path(path).suffix!r}"
        raise UsageError(f"unsupported image {what} (use {choices})")
    return FORMATS[key]


def resize_to(image: "Image.Image", size: int | None) -> "Image.Image":
    """Downscale so the longest side is *size* (Lanczos); never upscales (that is a UsageError)."""
    if size is None:
        return image
    size = int(size)
    if size < 1:
        raise UsageError(f"--size must be a positive number of pixels, got {size}")
    longest = max(image.size)
    if size > longest:
        raise UsageError(f"--size {size} is larger than the image ({longest} px); --size only downscales")
    if size == longest:
        return image
    from PIL import Image

    w, h = image.size
    scale = size / longest
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(new, Image.Resampling.LANCZOS)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=False, default=str)


def save_image(
    image: "Image.Image",
    path: str | os.PathLike,
    *,
    metadata: dict | None = None,
    format: str | None = None,
    size: int | None = None,
) -> Path:
    """Write *image* to *path* atomically (temp file + rename) and return the path.

    *format* is ``png``/``jpg``/``webp`` (default: from the suffix). *size* downscales to that
    longest side. *metadata*: PNG stores each key as a text chunk (non-string values as JSON; the
    recipe goes under ``c2l:recipe``); JPEG/WebP store ``metadata["c2l:recipe"]`` (or, if absent,
    the whole dict) as JSON in the EXIF ImageDescription.
    """
    from PIL import Image, PngImagePlugin

    pil_format, suffix = image_format(path, format)
    image = resize_to(image, size)
    kwargs: dict[str, Any] = {}
    if pil_format == "PNG":
        if metadata:
            info = PngImagePlugin.PngInfo()
            for key, value in metadata.items():
                info.add_text(str(key), _as_text(value), zip=len(_as_text(value)) > 1024)
            kwargs["pnginfo"] = info
        kwargs["optimize"] = False
    else:
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        kwargs["quality"] = LOSSY_QUALITY
        if metadata:
            payload = metadata.get(RECIPE_KEY, metadata)
            exif = Image.Exif()
            # EXIF ASCII: JSON with ensure_ascii keeps any prompt representable.
            exif[_EXIF_DESCRIPTION] = json.dumps({RECIPE_KEY: payload} if RECIPE_KEY in metadata else payload)
            kwargs["exif"] = exif.tobytes()
    target = Path(path)
    try:
        with atomic_path(target, suffix=suffix) as tmp:
            image.save(tmp, format=pil_format, **kwargs)
    except OSError as exc:
        from .errors import C2LError

        raise C2LError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


def read_recipe(path: str | os.PathLike) -> dict:
    """The recipe stored in an image by :func:`save_image` (PNG text chunk or JPEG/WebP EXIF)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            text = im.info.get(RECIPE_KEY)
            if text is None and hasattr(im, "text"):
                text = im.text.get(RECIPE_KEY)  # type: ignore[attr-defined]
            if text is None:
                desc = im.getexif().get(_EXIF_DESCRIPTION)
                if desc:
                    try:
                        doc = json.loads(desc)
                    except ValueError:
                        doc = None
                    if isinstance(doc, dict) and RECIPE_KEY in doc:
                        text = doc[RECIPE_KEY]
    except FileNotFoundError as exc:
        raise FormatError(f"{path}: no such file") from exc
    except UnidentifiedImageError as exc:
        raise FormatError(f"{path} is not an image") from exc
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if text is None:
        raise FormatError(f"{path} carries no c2l recipe (was it written by c2l sample?)")
    if isinstance(text, dict):
        return text
    try:
        recipe = json.loads(text)
    except ValueError as exc:
        raise FormatError(f"{path}: the c2l recipe is not valid JSON ({exc})") from exc
    if not isinstance(recipe, dict):
        raise FormatError(f"{path}: the c2l recipe is not a JSON object")
    return recipe


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw, text: str, font, width: int) -> str:
    """*text*, shortened with an ellipsis until it fits *width* pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def make_grid(
    images: "Sequence[Image.Image]",
    ncols: int | None = None,
    labels: Sequence[str] | None = None,
    *,
    padding: int = 2,
    background: str | tuple = "white",
) -> "Image.Image":
    """A contact sheet of *images*, *ncols* per row (default: a near-square grid).

    Each cell is as large as the largest image (smaller ones are centred). With *labels* (one per
    image) a caption band is drawn under every cell — the labelled strips of ``c2l edit``.
    """
    from PIL import Image, ImageDraw

    images = list(images)
    if not images:
        raise UsageError("make_grid needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise UsageError(f"make_grid got {len(labels)} labels for {len(images)} images")
    n = len(images)
    if ncols is None:
        ncols = math.ceil(math.sqrt(n))
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    cell_w = max(im.width for im in images)
    cell_h = max(im.height for im in images)
    label_h = 0
    font = None
    if labels is not None:
        font_size = max(10, min(48, cell_w // 16))
        font = _font(font_size)
        label_h = int(font_size * 1.6)
    pad = max(0, int(padding))
    width = ncols * cell_w + (ncols + 1) * pad
    height = nrows * (cell_h + label_h) + (nrows + 1) * pad
    sheet = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(sheet) if labels is not None else None
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        x0 = pad + c * (cell_w + pad)
        y0 = pad + r * (cell_h + label_h + pad)
        sheet.paste(im.convert("RGB"), (x0 + (cell_w - im.width) // 2, y0 + (cell_h - im.height) // 2))
        if draw is not None:
            text = _fit_text(draw, str(labels[i]), font, cell_w - 4)
            tw = draw.textlength(text, font=font)
            draw.text((x0 + (cell_w - tw) / 2, y0 + cell_h + label_h * 0.15), text, fill="black", font=font)
    return sheet


def slugify(text: str, max_len: int = 48) -> str:
    """A file-name-safe slug: ASCII lower case, words joined by ``-``, at most *max_len* chars."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(text) > max_len:
        cut = text[:max_len]
        text = cut.rsplit("-", 1)[0] if "-" in cut[max_len // 2 :] else cut
    return text.strip("-") or "image"


def unique_path(
    directory: str | os.PathLike, stem: str, suffix: str, *, also: Iterable[str] = ()
) -> Path:
    """``directory/stem+suffix``, or ``stem-1``, ``stem-2``, … — the first name not taken.

    *also*: further suffixes (e.g. ``.npz`` written beside an image) that must be free for the
    same stem, so companion files share a name.
    """
    directory = Path(directory)
    suffixes = [suffix, *also]
    n = 0
    while True:
        name = stem if n == 0 else f"{stem}-{n}"
        if not any((directory / f"{name}{s}").exists() for s in suffixes):
            return directory / f"{name}{suffix}"
        n += 1
