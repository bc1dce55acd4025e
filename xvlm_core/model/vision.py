"""Pixels in, CLIP features out: the "pad" preprocessing and the CLIP tower."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from xvlm_core.errors import CheckpointError
from xvlm_core.model.config import VisionConfig, parse_preprocessor, read_json_object, select_layer_count
from xvlm_core.model.images import CLIP_MEAN, CLIP_STD, pad_to_square


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
        # Only a missing file means "the defaults": a FIFO or a folder in its place is refused when read.
        if path is None or not path.exists():
            return cls(size=image_size, crop=image_size, aspect_ratio=aspect_ratio)
        raw = read_json_object(path, CheckpointError, "the image preprocessing config")
        values = parse_preprocessor(raw, path, image_size)
        return cls(values.size, values.crop, values.resample, values.mean, values.std, aspect_ratio)

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
        kept = select_layer_count(vision, clip_config.num_hidden_layers)
        # hidden_states[k] is the output of layer k, so layers after `kept` never influence it.
        self.kept_layers = kept
        truncated = CLIPVisionConfig(**{**clip_config.to_dict(), "num_hidden_layers": kept})
        self.clip = CLIPVisionModel(truncated)
        self.keep_cls = vision.select_feature == "cls_patch"
        self.image_size = clip_config.image_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.clip(pixel_values=pixel_values).last_hidden_state  # [B, 1 + 576, C]
        return hidden if self.keep_cls else hidden[:, 1:]  # [B, 576, C]
