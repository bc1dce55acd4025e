"""The checkpoint's config.json, read into one typed and validated config."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xvlm_core.errors import ConfigError, XvlmError
from xvlm_core.towers import DEFAULT_TOWER

if TYPE_CHECKING:
    from transformers import LlamaConfig

IMAGE_TOKEN_INDEX = -200
DEFAULT_VISION_TOWER = DEFAULT_TOWER
_PROJECTOR_TYPES = re.compile(r"^(linear|xdpnet|xdpnetv10_\d+|mlp\d+x_gelu)$")


@dataclass(frozen=True)
class LanguageConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int

    def to_llama(self) -> LlamaConfig:
        from transformers import LlamaConfig

        return LlamaConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            vocab_size=self.vocab_size,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            max_position_embeddings=self.max_position_embeddings,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            hidden_act="silu",
            attention_bias=False,
            mlp_bias=False,
            tie_word_embeddings=False,
        )


@dataclass(frozen=True)
class VisionConfig:
    tower: str  # hub id or path, as written in the checkpoint
    select_layer: int
    select_feature: str  # "patch" drops CLS, "cls_patch" keeps it
    hidden_size: int  # mm_hidden_size: width of the tower's features
    image_aspect_ratio: str  # "pad" or "square" (plain resize + crop)


@dataclass(frozen=True)
class ProjectorConfig:
    type: str
    in_features: int
    out_features: int


@dataclass(frozen=True)
class XvlmConfig:
    language: LanguageConfig
    vision: VisionConfig
    projector: ProjectorConfig

    @property
    def has_vision(self) -> bool:
        return bool(self.vision.tower)


def _require(raw: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    if key not in raw:
        raise ConfigError(f"{path}: the field '{key}' is missing; this is not an Xmodel-VLM config.")
    value = raw[key]
    if kind is float and isinstance(value, int):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{path}: '{key}' is {value!r}, expected a {kind.__name__}.")
    return value


def parse_config(raw: dict[str, Any], path: Path) -> XvlmConfig:
    """Validate a config dict; every message names the file, the field and the value."""
    model_type = raw.get("model_type")
    if model_type not in ("xmodelvlm", "llava", "llava_llama", "xmodel", "llama"):
        raise ConfigError(f"{path}: model_type {model_type!r} is not an Xmodel-VLM / LLaVA-style model.")
    hidden = _require(raw, "hidden_size", int, path)
    heads = _require(raw, "num_attention_heads", int, path)
    if hidden % heads:
        raise ConfigError(f"{path}: hidden_size {hidden} is not divisible by num_attention_heads {heads}.")
    kv_heads = raw.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise ConfigError(f"{path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}.")
    language = LanguageConfig(
        hidden_size=hidden,
        intermediate_size=_require(raw, "intermediate_size", int, path),
        num_hidden_layers=_require(raw, "num_hidden_layers", int, path),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=_require(raw, "vocab_size", int, path),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        rope_theta=float(raw.get("rope_theta", 10000.0)),
        max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
        bos_token_id=int(raw.get("bos_token_id", 1)),
        eos_token_id=int(raw.get("eos_token_id", 2)),
        pad_token_id=int(raw.get("pad_token_id") or 0),
    )
    tower = raw.get("mm_vision_tower") or raw.get("vision_tower") or ""
    vision_type = raw.get("vision_tower_type", "clip")
    if tower and vision_type != "clip":
        raise ConfigError(f"{path}: vision_tower_type {vision_type!r} is not supported (only 'clip').")
    select_feature = raw.get("mm_vision_select_feature", "patch")
    if select_feature not in ("patch", "cls_patch"):
        raise ConfigError(f"{path}: mm_vision_select_feature {select_feature!r} is not 'patch' or 'cls_patch'.")
    aspect = raw.get("image_aspect_ratio", "pad") or "square"
    if aspect not in ("pad", "square"):
        raise ConfigError(f"{path}: image_aspect_ratio {aspect!r} is not supported (only 'pad' or 'square').")
    if raw.get("mm_use_im_start_end"):
        raise ConfigError(f"{path}: mm_use_im_start_end = true is not supported by Xmodel-VLM.")
    mm_hidden = int(raw.get("mm_hidden_size", 1024))
    vision = VisionConfig(
        tower=tower,
        select_layer=int(raw.get("mm_vision_select_layer", -2)),
        select_feature=select_feature,
        hidden_size=mm_hidden,
        image_aspect_ratio=aspect,
    )
    projector_type = raw.get("mm_projector_type", "linear")
    if not isinstance(projector_type, str) or not _PROJECTOR_TYPES.match(projector_type):
        raise ConfigError(f"{path}: mm_projector_type {projector_type!r} is not a known projector type.")
    projector = ProjectorConfig(type=projector_type, in_features=mm_hidden, out_features=hidden)
    return XvlmConfig(language=language, vision=vision, projector=projector)


def read_json_object(path: Path, error: type[XvlmError], what: str) -> dict[str, Any]:
    """The JSON object in a checkpoint's file; anything else raises `error` with a sentence naming the file."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} is missing.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what} ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: {what} is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: {what} is not a JSON object.")
    return raw


def load_config(folder: Path) -> XvlmConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no config.json in this folder; it is not a model checkpoint.")
    return parse_config(read_json_object(path, ConfigError, "the config"), path)
