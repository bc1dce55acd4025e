"""Images into vLLM's prompt: `xvlm`'s preprocessing, and one placeholder widened to the image's positions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import torch
from transformers import BatchFeature
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
)

from xvlm_core.engines.vllm.config import TowerInfo, checked_config, tower_info
from xvlm_core.messages import image_limit
from xvlm_core.model.images import to_rgb
from xvlm_core.model.prompt import IMAGE_PLACEHOLDER
from xvlm_core.model.vision import ImagePreprocessor


class XvlmProcessingInfo(BaseProcessingInfo):
    @cached_property
    def tower(self) -> TowerInfo:
        return tower_info(self.get_hf_config())

    @cached_property
    def preprocess(self) -> ImagePreprocessor:
        """Pad to a square in CLIP's mean colour, then CLIP's PIL processor: the same pixels `xvlm` feeds."""
        aspect = checked_config(self.get_hf_config()).vision.image_aspect_ratio
        size = self.tower.clip_config.image_size
        return ImagePreprocessor.from_folder(self.tower.folder, size, aspect)

    @property
    def image_token_id(self) -> int:
        return self.get_tokenizer().image_token_id

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        # As the app: the images of a prompt take at most half the context, the rest is for text and answer.
        context = self.get_hf_config().max_position_embeddings
        return {"image": image_limit(context, self.tower.image_tokens)}

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": self.tower.image_tokens}


class XvlmDummyInputsBuilder(BaseDummyInputsBuilder[XvlmProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE_PLACEHOLDER * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Any = None) -> dict:
        side = self.info.tower.clip_config.image_size
        overrides = mm_options.get("image") if mm_options else None
        images = self._get_dummy_images(width=side, height=side, num_images=mm_counts.get("image", 0),
                                        overrides=overrides)
        return {"image": images}


class XvlmMultiModalProcessor(BaseMultiModalProcessor[XvlmProcessingInfo]):
    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        images = hf_data.get("images") or []
        pixels = [self.info.preprocess(to_rgb(image)) for image in images]  # each [1, 3, 336, 336]
        return BatchFeature({"pixel_values": torch.cat(pixels)} if pixels else {})

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {"pixel_values": MultiModalFieldConfig.batched("image")}

    def _get_prompt_updates(self, mm_items: Any, hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs: Any) -> Sequence[PromptReplacement]:
        placeholder = self.info.image_token_id
        return [
            PromptReplacement(
                modality="image",
                target=[placeholder],
                replacement=[placeholder] * self.info.tower.image_tokens,
            )
        ]
