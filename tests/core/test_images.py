"""Untrusted image files: unusual but valid ones work, broken ones give a clear message."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xvlm_core import model
from xvlm_core.errors import ImageError
from xvlm_core.model.images import (
    MAX_DECODED_BYTES,
    MAX_IMAGE_PIXELS,
    load_image,
    pad_to_square,
    read_image_bytes,
    to_rgb,
)
from xvlm_core.model.vision import ImagePreprocessor


def test_transparent_png_is_composited_on_white(tmp_path: Path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (10, 10), (255, 0, 0, 0)).save(path)
    assert load_image(path).getpixel((5, 5)) == (255, 255, 255)


def test_palette_png_with_transparency(tmp_path: Path):
    path = tmp_path / "palette.png"
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    image.save(path, transparency=0)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg(tmp_path: Path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path)
    red, green, blue = load_image(path).getpixel((8, 8))
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path: Path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(path)
    value = load_image(path).getpixel((4, 4))
    assert value[0] == value[1] == value[2] and 120 <= value[0] <= 135


def test_animated_gif_uses_first_frame(tmp_path: Path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    red, _, blue = load_image(path).getpixel((4, 4))
    assert red > 200 and blue < 60


def test_exif_rotation_is_applied(tmp_path: Path):
    path = tmp_path / "phone.jpg"
    image = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    image.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_bytes_are_accepted(tmp_path: Path):
    buffer = io.BytesIO()
    Image.new("RGB", (5, 7), (1, 2, 3)).save(buffer, format="PNG")
    assert load_image(buffer.getvalue()).size == (5, 7)


def test_text_file_is_not_an_image(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ImageError, match="notes.txt: not an image file"):
        load_image(path)


def test_truncated_png_is_reported(tmp_path: Path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageError, match="cut.png: the image is truncated or damaged"):
        load_image(path)


def test_decompression_bomb_is_refused(tmp_path: Path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(path)  # a few KB on disk, 144 megapixels decoded
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "gone.png")


def test_pad_uses_the_clip_mean_colour_and_centres():
    padded = pad_to_square(Image.new("RGB", (4, 2), (0, 0, 0)), (122, 116, 104))
    assert padded.size == (4, 4)
    assert padded.getpixel((0, 0)) == (122, 116, 104)
    assert padded.getpixel((0, 1)) == (0, 0, 0)


def test_preprocessor_output_shape_and_normalisation():
    pixels = ImagePreprocessor()(Image.new("RGB", (500, 280), (122, 116, 104)))
    assert tuple(pixels.shape) == (1, 3, 336, 336)
    assert float(pixels.abs().max()) < 0.02  # the (truncated) mean colour normalises to about zero


def png_header_only(width: int, height: int, bit_depth: int, colour_type: int) -> bytes:
    """A PNG whose header promises `width` x `height` pixels and whose data holds a few bytes: nothing
    beyond the header may be decoded before the size is checked."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_sixteen_bit_png_that_decodes_to_too_much_memory_is_refused(tmp_path: Path):
    path = tmp_path / "deep.png"
    path.write_bytes(png_header_only(8900, 8900, 16, 0))  # 16-bit grey: 158 MB once decoded
    assert path.stat().st_size < 1000
    with pytest.raises(ImageError) as error:
        load_image(path)
    message = str(error.value)
    assert "deep.png" in message and "8900x8900" in message
    assert f"{MAX_DECODED_BYTES // 2**20} MB" in message


def test_large_photo_is_within_the_decoding_budget(tmp_path: Path):
    path = tmp_path / "photo.png"
    path.write_bytes(png_header_only(8000, 6000, 8, 2))  # a 48-megapixel RGB photo
    with pytest.raises(ImageError, match="truncated or damaged"):  # not refused for its size: decoding starts
        load_image(path)


def test_sixteen_bit_conversion_keeps_one_copy_of_the_samples(tmp_path: Path):
    pixels = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)
    rgb = to_rgb(Image.fromarray(pixels))
    assert np.array_equal(np.asarray(rgb)[..., 0], (pixels.astype(np.float64) / 257).astype(np.uint8))


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_device_file_is_refused_before_reading():
    with pytest.raises(ImageError, match="/dev/zero: not a regular file"):
        load_image("/dev/zero")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="pipe.png: not a regular file"):
        load_image(fifo)
    link = tmp_path / "link.png"
    link.symlink_to(fifo)
    with pytest.raises(ImageError, match="link.png: not a regular file"):
        read_image_bytes(link)


def test_folder_and_nul_in_the_name_are_clear_errors(tmp_path: Path):
    with pytest.raises(ImageError, match=r"^\.: is a folder, not an image\.$"):
        load_image(".")
    with pytest.raises(ImageError, match=r"a\\0b.png: not a usable file name \(it contains a NUL character\)"):
        load_image(str(tmp_path / "a\0b.png"))


def test_panorama_is_shrunk_before_padding_so_the_square_stays_bounded():
    padded = pad_to_square(Image.new("RGB", (20_000, 100), (0, 0, 0)), (122, 116, 104))
    assert padded.width == padded.height and padded.width ** 2 <= MAX_IMAGE_PIXELS


def test_transparency_is_composited_in_bands_with_the_same_result(monkeypatch):
    pixels = np.random.default_rng(0).integers(0, 256, (37, 23, 4), dtype=np.uint8)
    whole = to_rgb(Image.fromarray(pixels, "RGBA"))
    monkeypatch.setattr(model.images, "BAND_PIXELS", 50)  # two rows a band, the last one short
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(pixels, "RGBA"))), np.asarray(whole))
    palette = Image.fromarray(pixels[..., 0]).convert("P")
    palette.info["transparency"] = 7
    over_white = Image.alpha_composite(Image.new("RGBA", palette.size, "white"), palette.convert("RGBA"))
    assert np.array_equal(np.asarray(to_rgb(palette)), np.asarray(over_white.convert("RGB")))


def test_a_palette_image_is_bounded_by_its_rgb_copy(tmp_path: Path):
    path = tmp_path / "palette.png"
    path.write_bytes(png_header_only(8000, 7000, 8, 3))  # 56 MB of palette indexes, 168 MB as RGB
    with pytest.raises(ImageError, match="8000x7000 pixels in mode P would take 161 MB"):
        load_image(path)


def test_a_large_transparent_palette_png_converts_within_a_little_more_than_its_rgb_copy(tmp_path: Path):
    import subprocess
    import sys

    side = 7000  # 49 megapixels: 147 MB as RGB, within the budget
    image = Image.new("P", (side, side), 0)
    image.putpalette([255, 0, 0] * 256)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0)
    path = tmp_path / "clear.png"
    path.write_bytes(buffer.getvalue())
    assert path.stat().st_size < 200_000
    probe = ("import resource, sys; from xvlm_core.model.images import load_image; "
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; load_image(sys.argv[1]); "
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    grown_mb = int(subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True,
                                  check=True, timeout=120).stdout)
    assert grown_mb < 2.2 * 147  # the indexes, the RGB result and bands; it was five times the result
