"""Opening untrusted image files as upright RGB pictures. Pillow and NumPy only: safe to import anywhere."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xvlm_core.errors import ImageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# A 50-megapixel phone photo still fits; a decompression bomb does not.
MAX_IMAGE_PIXELS = 80_000_000
MAX_IMAGE_BYTES = 100 * 1024 * 1024
# Only these parsers of Pillow ever see untrusted bytes.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
# Pillow format -> file suffix; MPO (JPEG with extra frames, from phone cameras) comes through the JPEG parser.
FORMAT_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp",
                   "TIFF": ".tiff"}
IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def read_image_bytes(path: Path) -> bytes:
    """The bytes of an image file, refusing files too large to be a sensible image."""
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise ImageError(f"{path}: the file is larger than {MAX_IMAGE_BYTES // 2**20} MB.")
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file.") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image.") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied.") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read it ({exc.strerror or exc}).") from None


def open_image(source: str | Path | bytes, name: str | None = None) -> tuple[Image.Image, str]:
    """Decode an untrusted image file (or its bytes): its upright first frame, and its Pillow format name.

    `name` is what error messages call the image (default: the path, or "the pasted image" for bytes).
    """
    name = name or ("the pasted image" if isinstance(source, bytes) else str(source))
    data = source if isinstance(source, bytes) else read_image_bytes(Path(source))
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{name}: the image is larger than {MAX_IMAGE_BYTES // 2**20} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ImageError(
                        f"{name}: {image.width}x{image.height} pixels is too large "
                        f"(at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels)."
                    )
                image_format = image.format or "PNG"
                image.seek(0)  # animated GIF/WebP/APNG: the first frame
                image.load()  # the whole frame now: a truncated file fails here, not later
                return ImageOps.exif_transpose(image), image_format
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or not a PNG, JPEG, GIF, BMP, WebP or TIFF).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: the image is too large to open safely "
                         f"(at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name}: the image is truncated or damaged ({exc}).") from None


def load_image(source: str | Path | bytes) -> Image.Image:
    """Open an untrusted image file (or its bytes) as an upright RGB image."""
    return to_rgb(open_image(source)[0])


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any mode: transparency over white, 16-bit scaled down, palette expanded."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow's plain convert clips 16-bit values at 255, which turns most photos white.
        pixels = np.asarray(image, dtype=np.float64)
        scale = 257.0 if pixels.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(pixels / scale, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas
