"""The checkpoint's config.json as vLLM sees it: LLaMA's fields plus the multimodal ones, read as data only.

The authors' config names Python files through `auto_map`; registering this class for `xmodelvlm` makes
transformers use it instead, so nothing from the checkpoint runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from transformers import CLIPVisionConfig, LlamaConfig

from xvlm_core import hub
from xvlm_core.errors import CheckpointError
from xvlm_core.model.config import XvlmConfig, parse_config, select_layer_count
from xvlm_core.model.towers import KNOWN_TOWERS

MODEL_TYPE = "xmodelvlm"
ARCHITECTURE = "XmodelLMForCausalLM"
TOWER_OVERRIDE_HINT = """--hf-overrides '{"mm_vision_tower": "FOLDER"}'"""


class XmodelVLMConfig(LlamaConfig):
    """LLaMA's config; the multimodal fields (`mm_vision_tower`, `mm_projector_type`...) ride along as attributes."""

    model_type = MODEL_TYPE


@dataclass(frozen=True)
class TowerInfo:
    clip_config: CLIPVisionConfig
    folder: Path | None  # the tower's own folder (config, preprocessor, maybe weights); None: a known hub tower
    repo_id: str | None  # where its weights come from when the checkpoint does not embed them
    kept_layers: int  # layers up to the selected one; the rest never influence the features
    image_tokens: int  # positions one image takes in the prompt


def checked_config(config: LlamaConfig) -> XvlmConfig:
    """The config validated by the same rules as `xvlm`; raises ConfigError naming the field and value."""
    return parse_config(config.to_dict(), Path(str(getattr(config, "_name_or_path", "") or ".")) / "config.json")


def tower_info(config: LlamaConfig) -> TowerInfo:
    """The vision tower `mm_vision_tower` names (after any --hf-overrides), with the numbers the model needs."""
    checked = checked_config(config)
    if not checked.vision.tower:
        raise CheckpointError("This checkpoint names no vision tower (mm_vision_tower), so it is not a VLM.")
    return _tower_info(checked)


@lru_cache(maxsize=8)
def _tower_info(checked: XvlmConfig) -> TowerInfo:
    from xvlm_core.engines.pytorch.loading import read_clip_config

    name = checked.vision.tower
    folder = Path(name).expanduser()
    repo_id = None
    if folder.is_dir():
        clip_config = read_clip_config(folder)
    else:
        # Configs often hold a path from the authors' machine; its folder name says which hub repo it was.
        repo_id = hub.tower_repo_id(name) or name
        if repo_id not in KNOWN_TOWERS:
            raise CheckpointError(
                f"The config names the vision tower '{name}', which is neither a folder nor a known tower; "
                f"pass its folder with {TOWER_OVERRIDE_HINT}."
            )
        clip_config, folder = CLIPVisionConfig(**KNOWN_TOWERS[repo_id]), None
    kept = select_layer_count(checked.vision, clip_config.num_hidden_layers)
    patches = (clip_config.image_size // clip_config.patch_size) ** 2
    patches += checked.vision.select_feature == "cls_patch"
    factor = projector_factor(checked.projector.type)
    if patches % factor:
        raise CheckpointError(f"{patches} vision tokens cannot be folded by the projector's factor {factor}.")
    return TowerInfo(clip_config, folder, repo_id, kept, patches // factor)


def projector_factor(projector_type: str) -> int:
    """How many consecutive vision tokens XDP folds into one; other projector types are not served by vLLM."""
    if projector_type == "xdpnet":
        return 4
    if projector_type.startswith("xdpnetv10_"):
        return int(projector_type.removeprefix("xdpnetv10_"))
    raise CheckpointError(
        f"mm_projector_type {projector_type!r} is not served through vLLM yet (only xdpnet); use `xvlm serve`."
    )
