"""Opening untrusted image files as upright RGB pictures. Pillow and NumPy only: safe to import anywhere."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

from xvlm_core.errors import ImageError
from xvlm_core.local_files import regular_file_info
from xvlm_core.messages import MAX_IMAGE_BYTES, read_image_bytes

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# A 50-megapixel phone photo still fits; a decompression bomb does not.
MAX_IMAGE_PIXELS = 80_000_000
# Memory for the decoded picture (width x height x bands x bytes per sample, read from the header before
# decoding): a 50-megapixel RGB photo (150 MB) fits; a small file that inflates to more is refused.
MAX_DECODED_BYTES = 150 * 1024 * 1024
BAND_PIXELS = 1 << 20  # pixels composited at once over white (4 MB of RGBA)
# Only these parsers of Pillow ever see untrusted bytes.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
# Pillow format -> file suffix; MPO (JPEG with extra frames, from phone cameras) comes through the JPEG parser.
FORMAT_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp",
                   "TIFF": ".tiff"}
IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def file_identity(path: Path) -> tuple[str, int, int]:
    """(path, mtime, size) of an image file, to notice when it changes; refuses what is not a regular file."""
    info = regular_file_info(path, MAX_IMAGE_BYTES, ImageError, "an image")
    return str(path), info.st_mtime_ns, info.st_size


def decoded_bytes(image: Image.Image, name: str) -> int:
    """Memory the decoded frame takes, from the header alone: width x height x bands x bytes per sample."""
    try:
        mode = ImageMode.getmode(image.mode)
    except KeyError:
        raise ImageError(f"{name}: its pixel format {image.mode!r} is not supported.") from None
    return image.width * image.height * len(mode.bands) * np.dtype(mode.typestr).itemsize


def _check_size(image: Image.Image, name: str) -> None:
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{name}: {image.width}x{image.height} pixels is too large "
            f"(at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels)."
        )
    # Every picture becomes an RGB copy (for the model, for thumbnails): a palette image costs that, not its bytes.
    size = max(decoded_bytes(image, name), image.width * image.height * 3)
    if size > MAX_DECODED_BYTES:
        raise ImageError(
            f"{name}: {image.width}x{image.height} pixels in mode {image.mode} would take {math.ceil(size / 2**20)} MB "
            f"of memory to decode, more than the {MAX_DECODED_BYTES // 2**20} MB allowed for an image."
        )


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
                _check_size(image, name)  # the header's size and mode, before any pixel is decoded
                image_format = image.format or "PNG"
                image.seek(0)  # animated GIF/WebP/APNG: the first frame
                _check_size(image, name)  # a first frame of another size or mode than the header said
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
    # In place on one copy of the samples: a float64 copy of a 16-bit picture took four times its size.
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow's plain convert clips 16-bit values at 255, which turns most photos white.
        pixels = np.array(image)
        scale = 257 if pixels.max(initial=0) > 255 else 1
        pixels //= scale
        image = Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))
    elif image.mode == "F":
        pixels = np.array(image)
        np.clip(pixels, 0.0, 1.0, out=pixels)
        pixels *= 255
        image = Image.fromarray(pixels.astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        return _over_white(image)
    return image.convert("RGB")


def _over_white(image: Image.Image) -> Image.Image:
    """Transparency composited over white, a band of rows at a time: done on the whole picture, its RGBA copies
    peaked at five times the RGB result (1.4 GB for a 10 KB palette PNG)."""
    result = Image.new("RGB", image.size)
    rows = max(1, BAND_PIXELS // max(1, image.width))
    for top in range(0, image.height, rows):
        band = image.crop((0, top, image.width, min(image.height, top + rows))).convert("RGBA")
        white = Image.new("RGBA", band.size, (255, 255, 255, 255))
        result.paste(Image.alpha_composite(white, band).convert("RGB"), (0, top))
    return result


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """`image` centred on a square of `fill`; a long panorama is shrunk first, so the square stays within
    MAX_IMAGE_PIXELS rather than growing to its long side squared."""
    width, height = image.size
    if width == height:
        return image
    factor = math.ceil(max(width, height) / math.isqrt(MAX_IMAGE_PIXELS))
    if factor > 1:
        image = image.reduce(factor)
        width, height = image.size
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas
