"""Images in, CLIP features out: safe image loading, the "pad" preprocessing, and the CLIP tower."""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from xvlm_core.config import VisionConfig
from xvlm_core.errors import ImageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# A 50-megapixel phone photo still fits; a decompression bomb does not.
MAX_IMAGE_PIXELS = 80_000_000
IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def load_image(source: str | Path | bytes) -> Image.Image:
    """Open an untrusted image file (or its bytes) as an upright RGB image."""
    name = "the pasted image" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            handle = io.BytesIO(source) if isinstance(source, bytes) else source
            with Image.open(handle) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ImageError(
                        f"{name}: {image.width}x{image.height} pixels is too large "
                        f"(at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels)."
                    )
                image.seek(0)  # animated GIF/WebP/APNG: the first frame
                image.load()
                upright = ImageOps.exif_transpose(image)
                return to_rgb(upright)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file.") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder, not an image.") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied.") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or a format Pillow cannot read).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: the image is too large to open safely.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name}: the image is truncated or damaged ({exc}).") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any mode: transparency over white, 16-bit scaled down, palette expanded."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow's plain convert clips 16-bit values at 255, which turns most photos white.
        pixels = np.asarray(image, dtype=np.float64)
        scale = 257.0 if pixels.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(pixels / scale, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8), mode="L")
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


@dataclass(frozen=True)
class ImagePreprocessor:
    """The CLIP processor settings of a tower, plus LLaVA's pad-to-square step."""

    size: int = 336
    crop: int = 336
    resample: int = 3  # bicubic
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    aspect_ratio: str = "pad"

    @classmethod
    def from_folder(cls, folder: Path | None, image_size: int, aspect_ratio: str) -> ImagePreprocessor:
        path = folder / "preprocessor_config.json" if folder else None
        if path is None or not path.is_file():
            return cls(size=image_size, crop=image_size, aspect_ratio=aspect_ratio)
        raw = json.loads(path.read_text(encoding="utf-8"))
        size, crop = raw.get("size", image_size), raw.get("crop_size", image_size)
        return cls(
            size=size.get("shortest_edge", image_size) if isinstance(size, dict) else int(size),
            crop=crop.get("height", image_size) if isinstance(crop, dict) else int(crop),
            resample=int(raw.get("resample", 3)),
            mean=tuple(raw.get("image_mean", CLIP_MEAN)),
            std=tuple(raw.get("image_std", CLIP_STD)),
            aspect_ratio=aspect_ratio,
        )

    def __post_init__(self) -> None:
        processor = CLIPImageProcessorPil(
            size={"shortest_edge": self.size},
            crop_size={"height": self.crop, "width": self.crop},
            resample=self.resample,
            image_mean=list(self.mean),
            image_std=list(self.std),
        )
        object.__setattr__(self, "_processor", processor)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB image -> pixel values [1, 3, crop, crop] in float32."""
        if self.aspect_ratio == "pad":
            image = pad_to_square(image, tuple(int(m * 255) for m in self.mean))
        pixels = self._processor(images=image, return_tensors="pt")["pixel_values"]
        return pixels.float()


class VisionTower(nn.Module):
    """CLIP features of the selected layer, without running the layers after it."""

    def __init__(self, clip_config: CLIPVisionConfig, vision: VisionConfig):
        super().__init__()
        total = clip_config.num_hidden_layers
        layer = vision.select_layer
        kept = total + layer + 1 if layer < 0 else layer
        if not 0 < kept <= total:
            raise ValueError(f"mm_vision_select_layer {layer} does not exist in a {total}-layer tower")
        # hidden_states[k] is the output of layer k, so layers after `kept` never influence it.
        self.kept_layers = kept
        truncated = CLIPVisionConfig(**{**clip_config.to_dict(), "num_hidden_layers": kept})
        self.clip = CLIPVisionModel(truncated)
        self.keep_cls = vision.select_feature == "cls_patch"
        self.image_size = clip_config.image_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.clip(pixel_values=pixel_values).last_hidden_state  # [B, 1 + 576, C]
        return hidden if self.keep_cls else hidden[:, 1:]  # [B, 576, C]
