"""XmodelVLM: CLIP tower -> projector -> image embeddings spliced into LlamaForCausalLM's input."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, LlamaForCausalLM

from xvlm_core.errors import ConfigError, XvlmError
from xvlm_core.model.config import IMAGE_TOKEN_INDEX, XvlmConfig
from xvlm_core.model.projector import build_projector
from xvlm_core.model.vision import VisionTower


class XmodelVLM(nn.Module):
    def __init__(self, config: XvlmConfig, clip_config: CLIPVisionConfig | None):
        super().__init__()
        self.config = config
        self.language_model = LlamaForCausalLM(config.language.to_llama())
        self.vision_tower = VisionTower(clip_config, config.vision) if clip_config is not None else None
        self.projector = build_projector(config.projector) if clip_config is not None else None
        self.image_tokens = 0
        if clip_config is not None:
            patches = (clip_config.image_size // clip_config.patch_size) ** 2
            patches += config.vision.select_feature == "cls_patch"
            factor = getattr(self.projector, "factor", 1)
            if patches % factor:
                raise ConfigError(f"{patches} vision tokens cannot be folded by the projector's factor {factor}.")
            self.image_tokens = patches // factor

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, 336, 336] -> [N, 144, hidden] embeddings, in the language model's dtype."""
        if self.vision_tower is None or self.projector is None:
            raise XvlmError("This model has no vision tower, so it cannot look at images.")
        tower_param = next(self.vision_tower.parameters())
        features = self.vision_tower(pixel_values.to(tower_param.device, tower_param.dtype))  # [N, 576, C]
        projector_dtype = next(self.projector.parameters()).dtype
        return self.projector(features.to(projector_dtype))  # [N, 144, hidden]

    def embed(self, input_ids: list[int], images: list[torch.Tensor]) -> torch.Tensor:
        """Token embeddings with each IMAGE_TOKEN_INDEX replaced by one image's embeddings: [1, T, hidden]."""
        embed_tokens = self.language_model.get_input_embeddings()
        device = embed_tokens.weight.device
        pieces: list[torch.Tensor] = []
        run: list[int] = []
        image_iter = iter(images)
        for token in input_ids:
            if token != IMAGE_TOKEN_INDEX:
                run.append(token)
                continue
            if run:
                pieces.append(embed_tokens(torch.tensor(run, device=device)))
                run = []
            pieces.append(next(image_iter).to(device, embed_tokens.weight.dtype))  # [144, hidden]
        if run:
            pieces.append(embed_tokens(torch.tensor(run, device=device)))
        return torch.cat(pieces).unsqueeze(0)
