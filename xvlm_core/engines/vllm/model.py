"""Xmodel-VLM in vLLM's terms: vLLM's CLIP tower (cut at the selected layer), the XDP projector, vLLM's Llama."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from vllm.model_executor.layers.linear import ColumnParallelLinear, RowParallelLinear
from vllm.model_executor.models.clip import CLIPVisionModel
from vllm.model_executor.models.interfaces import SupportsMultiModal, SupportsPP
from vllm.model_executor.models.module_mapping import MultiModelKeys
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper, init_vllm_registered_model
from vllm.multimodal import MULTIMODAL_REGISTRY

from xvlm_core.engines.vllm.config import TowerInfo, checked_config, projector_factor, tower_info
from xvlm_core.engines.vllm.processor import XvlmDummyInputsBuilder, XvlmMultiModalProcessor, XvlmProcessingInfo
from xvlm_core.errors import CheckpointError
from xvlm_core.model import checkpoint
from xvlm_core.model.checkpoint import EMBEDDED_TOWER_PREFIX, PROJECTOR_PREFIX
from xvlm_core.model.prompt import IMAGE_PLACEHOLDER

LANGUAGE_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
TOWER_FILE_PREFIX = "vision_model."  # in a tower's own folder, CLIPVisionModel or full CLIP alike


class XDPProjector(nn.Module):
    """Xmodel's XDP: fold `factor` consecutive tokens into one, then Linear-Mish-Linear (column, then row
    parallel, so tensor parallelism splits the hidden width and gathers once)."""

    def __init__(self, in_features: int, out_features: int, factor: int, quant_config: Any, prefix: str):
        super().__init__()
        self.factor = factor
        self.linear_in = ColumnParallelLinear(in_features * factor, out_features, bias=True,
                                              quant_config=quant_config, prefix=f"{prefix}.linear_in")
        self.act = nn.Mish()  # elementwise, so it runs on each shard of the column-parallel output
        self.linear_out = RowParallelLinear(out_features, out_features, bias=True, quant_config=quant_config,
                                            prefix=f"{prefix}.linear_out")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        images, tokens, channels = features.shape
        # Row-major view: 4 consecutive tokens in raster order, not a 2x2 spatial block.
        folded = features.reshape(images, tokens // self.factor, channels * self.factor)  # [N, 576, C] -> [N, 144, 4C]
        hidden, _ = self.linear_in(folded)
        hidden, _ = self.linear_out(self.act(hidden))
        return hidden  # [N, 144, hidden]


@MULTIMODAL_REGISTRY.register_processor(
    XvlmMultiModalProcessor, info=XvlmProcessingInfo, dummy_inputs=XvlmDummyInputsBuilder
)
class XmodelVLMForCausalLM(nn.Module, SupportsMultiModal, SupportsPP):
    packed_modules_mapping: ClassVar[dict[str, list[str]]] = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }

    # The authors' key names -> this module's. `load_weights` refuses any other key first.
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_suffix={"rotary_emb.inv_freq": None},  # a saved buffer of the original code, recomputed here
        orig_to_new_prefix={
            EMBEDDED_TOWER_PREFIX: "vision_tower.",
            PROJECTOR_PREFIX + "mlp.0.": "projector.linear_in.",
            PROJECTOR_PREFIX + "mlp.2.": "projector.linear_out.",
            "lm_head.": "language_model.lm_head.",
            "model.": "language_model.model.",
        },
    )

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return IMAGE_PLACEHOLDER
        raise ValueError("Xmodel-VLM reads images only.")

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        quant_config = vllm_config.quant_config
        checked = checked_config(config)
        self.tower_info: TowerInfo = tower_info(config)
        self.keep_cls = checked.vision.select_feature == "cls_patch"
        # The placeholder ids are never looked up in the embedding table: image embeddings replace them.
        self.configure_mm_token_handling(vocab_size=config.vocab_size, mm_token_ids=[config.vocab_size])

        with self._mark_tower_model(vllm_config, "image"):
            self.vision_tower = CLIPVisionModel(
                self.tower_info.clip_config, quant_config=quant_config,
                num_hidden_layers_override=self.tower_info.kept_layers, require_post_norm=False,
                prefix=f"{prefix}vision_tower",
            )
            self.projector = XDPProjector(
                checked.projector.in_features, checked.projector.out_features,
                projector_factor(checked.projector.type), quant_config, prefix=f"{prefix}projector",
            )
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config, hf_config=config, architectures=["LlamaForCausalLM"],
                prefix=f"{prefix}language_model",
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def embed_multimodal(self, **kwargs: object) -> torch.Tensor | list:
        pixel_values = kwargs.get("pixel_values")
        if pixel_values is None:
            return []
        if isinstance(pixel_values, list | tuple):
            pixel_values = torch.stack(list(pixel_values))
        pixel_values = pixel_values.to(self.vision_tower.dtype)  # [N, 3, 336, 336]
        features = self.vision_tower(pixel_values, feature_select_strategy="full" if self.keep_cls else "default")
        return self.projector(features.to(self.projector.linear_in.weight.dtype))  # [N, 576, C] -> [N, 144, hidden]

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def get_mm_mapping(self) -> MultiModelKeys:
        return MultiModelKeys.from_string_field(
            language_model="language_model", connector="projector", tower_model="vision_tower"
        )

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load the authors' checkpoint: every key must be one of the model's, and every parameter must come."""
        tower_files = self._tower_files()
        seen_embedded_tower: list[bool] = []

        def routed() -> Iterator[tuple[str, torch.Tensor]]:
            for name, tensor in weights:
                if name.startswith(EMBEDDED_TOWER_PREFIX):
                    seen_embedded_tower[:] = [True]
                    if tower_files:
                        continue  # the tower's own folder wins, as in `xvlm`
                elif not name.startswith((PROJECTOR_PREFIX, *LANGUAGE_PREFIXES)):
                    if not name.endswith("rotary_emb.inv_freq"):
                        raise CheckpointError(f"The checkpoint holds the weight '{name}', which Xmodel-VLM does not "
                                              "have; it is not an Xmodel-VLM checkpoint, or it is damaged.")
                elif name.startswith(PROJECTOR_PREFIX) and not name.startswith(
                    (PROJECTOR_PREFIX + "mlp.0.", PROJECTOR_PREFIX + "mlp.2.")
                ):
                    raise CheckpointError(f"The checkpoint holds the projector weight '{name}', which an XDP "
                                          "projector does not have (it has mlp.0 and mlp.2).")
                yield name, tensor

        loader = AutoWeightsLoader(self)
        loaded = loader.load_weights(routed(), mapper=self.hf_to_vllm_mapper)
        if not tower_files and not seen_embedded_tower:
            tower_files = self._download_tower()
        if tower_files:
            tower = checkpoint.read_weights(tower_files, lambda key: key.startswith(TOWER_FILE_PREFIX))
            tower_weights = (
                (key.removeprefix(TOWER_FILE_PREFIX), value)
                for key, value in tower.items()
                if not key.endswith("position_ids")
            )
            read = self.vision_tower.vision_model.load_weights(tower_weights)
            loaded |= {f"vision_tower.{TOWER_FILE_PREFIX}{name}" for name in read}
        self._check_all_loaded(loaded)
        return loaded

    def _tower_files(self) -> list:
        folder = self.tower_info.folder
        if folder is None:
            return []
        try:
            return checkpoint.find_weight_files(folder)
        except CheckpointError:
            return []  # a folder with the tower's config only: its weights are embedded in the checkpoint

    def _download_tower(self) -> list:
        if self.tower_info.repo_id is None:
            raise CheckpointError(f"{self.tower_info.folder}: the vision tower's folder has no weights, and the "
                                  "checkpoint does not embed them.")
        from huggingface_hub import snapshot_download

        folder = snapshot_download(self.tower_info.repo_id, allow_patterns=["*.json", "*.safetensors"])
        return checkpoint.find_weight_files(Path(folder))

    def _check_all_loaded(self, loaded: set[str]) -> None:
        missing = sorted(set(dict(self.named_parameters())) - loaded)
        if missing:
            raise CheckpointError(
                f"The checkpoint lacks {len(missing)} weights Xmodel-VLM needs (first: {missing[0]}); "
                "it is incomplete or not an Xmodel-VLM checkpoint."
            )
