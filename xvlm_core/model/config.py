"""The checkpoint's config.json, read into one typed and validated config."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xvlm_core.errors import ConfigError, XvlmError
from xvlm_core.local_files import MAX_CONFIG_BYTES, read_regular_file
from xvlm_core.model.images import CLIP_MEAN, CLIP_STD
from xvlm_core.model.towers import DEFAULT_TOWER

if TYPE_CHECKING:
    from transformers import LlamaConfig

IMAGE_TOKEN_INDEX = -200
DEFAULT_VISION_TOWER = DEFAULT_TOWER
_PROJECTOR_TYPES = re.compile(r"^(linear|xdpnet|xdpnetv10_\d+|mlp\d+x_gelu)$")
# Far beyond any real model, small enough that a typo cannot ask for terabytes before anything is checked.
_MAX_WIDTH = 1 << 16
_MAX_LAYERS = 1024
_MAX_POSITIONS = 1 << 20
_MAX_VOCAB = 1 << 22
_MAX_IMAGE_SIDE = 2048  # preprocessing sizes; CLIP towers use 224 or 336
_MISSING = object()


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
    source: Path = Path("config.json")  # the file these values came from, for messages


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


def _integer(raw: dict[str, Any], key: str, path: Path, default: Any = _MISSING, low: int = 1,
             high: int = _MAX_WIDTH) -> int:
    """An integer field in [low, high]; a message naming the file, the field and the value otherwise."""
    value = raw.get(key, default)
    if value is _MISSING:
        raise ConfigError(f"{path}: the field '{key}' is missing; this is not an Xmodel-VLM config.")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path}: '{key}' is {value!r}, expected a whole number.")
    if not low <= value <= high:
        raise ConfigError(f"{path}: '{key}' is {value}, expected a whole number from {low} to {high}.")
    return value


def _positive_number(raw: dict[str, Any], key: str, path: Path, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}: '{key}' is {value!r}, expected a number.")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{path}: '{key}' is {value!r}, expected a finite number above 0.")
    return float(value)


def _text(raw: dict[str, Any], key: str, path: Path, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{path}: '{key}' is {value!r}, expected a string.")
    return value


def parse_config(raw: dict[str, Any], path: Path) -> XvlmConfig:
    """Validate a config dict; every message names the file, the field and the value."""
    model_type = raw.get("model_type")
    if model_type not in ("xmodelvlm", "llava", "llava_llama", "xmodel", "llama"):
        raise ConfigError(f"{path}: model_type {model_type!r} is not an Xmodel-VLM / LLaVA-style model.")
    hidden = _integer(raw, "hidden_size", path)
    heads = _integer(raw, "num_attention_heads", path, high=hidden)
    if hidden % heads or (hidden // heads) % 2:
        raise ConfigError(
            f"{path}: hidden_size {hidden} does not split into num_attention_heads {heads} heads of an even width."
        )
    # null means "as many as the attention heads", as in LLaMA's own config.
    kv_heads = heads if raw.get("num_key_value_heads") is None else _integer(raw, "num_key_value_heads", path)
    if heads % kv_heads:
        raise ConfigError(f"{path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}.")
    vocab = _integer(raw, "vocab_size", path, high=_MAX_VOCAB)

    def token_id(key: str, default: int) -> int:
        value = raw.get(key)
        return default if value is None else _integer(raw, key, path, low=0, high=vocab - 1)

    language = LanguageConfig(
        hidden_size=hidden,
        intermediate_size=_integer(raw, "intermediate_size", path, high=8 * _MAX_WIDTH),
        num_hidden_layers=_integer(raw, "num_hidden_layers", path, high=_MAX_LAYERS),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=vocab,
        rms_norm_eps=_positive_number(raw, "rms_norm_eps", path, 1e-6),
        rope_theta=_positive_number(raw, "rope_theta", path, 10000.0),
        max_position_embeddings=_integer(raw, "max_position_embeddings", path, 2048, high=_MAX_POSITIONS),
        bos_token_id=token_id("bos_token_id", 1),
        eos_token_id=token_id("eos_token_id", 2),
        pad_token_id=token_id("pad_token_id", 0),
    )
    tower = raw.get("mm_vision_tower") or raw.get("vision_tower") or ""
    if not isinstance(tower, str):
        raise ConfigError(f"{path}: 'mm_vision_tower' is {tower!r}, expected a hub repo id or a folder.")
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
    mm_hidden = _integer(raw, "mm_hidden_size", path, 1024)
    # The tower's depth is only known once its own config is read; the range is checked then.
    select_layer = _integer(raw, "mm_vision_select_layer", path, -2, low=-_MAX_LAYERS, high=_MAX_LAYERS)
    if select_layer == 0:
        raise ConfigError(f"{path}: 'mm_vision_select_layer' is 0, which is the patch embeddings, not a layer.")
    vision = VisionConfig(
        tower=tower,
        select_layer=select_layer,
        select_feature=select_feature,
        hidden_size=mm_hidden,
        image_aspect_ratio=aspect,
        source=path,
    )
    projector_type = _text(raw, "mm_projector_type", path, "linear")
    if not _PROJECTOR_TYPES.match(projector_type):
        raise ConfigError(f"{path}: mm_projector_type {projector_type!r} is not a known projector type.")
    projector = ProjectorConfig(type=projector_type, in_features=mm_hidden, out_features=hidden)
    return XvlmConfig(language=language, vision=vision, projector=projector)


def select_layer_count(vision: VisionConfig, tower_layers: int) -> int:
    """How many tower layers the selected one needs (its output is that layer's); refuses a layer not there."""
    layer = vision.select_layer
    kept = tower_layers + layer + 1 if layer < 0 else layer
    if not 0 < kept <= tower_layers:
        raise ConfigError(
            f"{vision.source}: 'mm_vision_select_layer' is {layer}, but the vision tower has {tower_layers} layers "
            f"(use 1 to {tower_layers}, or -1 to -{tower_layers} counting from the last)."
        )
    return kept


def check_tower_config(vision: dict[str, Any], path: Path) -> None:
    """Validate the fields of a CLIP tower's config that shape the network, naming file, field and value."""
    hidden = _integer(vision, "hidden_size", path, 768)
    heads = _integer(vision, "num_attention_heads", path, 12, high=hidden)
    if hidden % heads:
        raise ConfigError(f"{path}: hidden_size {hidden} is not divisible by num_attention_heads {heads}.")
    _integer(vision, "intermediate_size", path, 3072, high=8 * _MAX_WIDTH)
    _integer(vision, "num_hidden_layers", path, 12, high=_MAX_LAYERS)
    _integer(vision, "num_channels", path, 3, low=3, high=3)
    image_size = _integer(vision, "image_size", path, 224, high=_MAX_IMAGE_SIDE)
    patch_size = _integer(vision, "patch_size", path, 32, high=image_size)
    if image_size % patch_size:
        raise ConfigError(f"{path}: image_size {image_size} is not a multiple of patch_size {patch_size}.")
    _positive_number(vision, "layer_norm_eps", path, 1e-5)


@dataclass(frozen=True)
class PreprocessorValues:
    """The fields of a tower's preprocessor_config.json that image preprocessing uses, checked."""

    size: int
    crop: int
    resample: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def parse_preprocessor(raw: dict[str, Any], path: Path, image_size: int) -> PreprocessorValues:
    """Validate preprocessor_config.json: the crop must be the tower's input size, and sizes, colours sane."""

    def side(key: str, inner: str) -> int:
        value = raw.get(key, image_size)
        if isinstance(value, dict):
            return _integer(value, inner, path, image_size, high=_MAX_IMAGE_SIDE)
        return _integer(raw, key, path, image_size, high=_MAX_IMAGE_SIDE)

    size, crop = side("size", "shortest_edge"), side("crop_size", "height")
    if crop != image_size:
        raise ConfigError(
            f"{path}: 'crop_size' is {crop}, but the vision tower reads {image_size}x{image_size} images."
        )
    if size < crop:
        raise ConfigError(f"{path}: 'size' is {size}, smaller than the crop of {crop}.")
    resample = _integer(raw, "resample", path, 3, low=0, high=5)

    def colour(key: str, default: tuple[float, ...], low_exclusive: bool) -> tuple[float, float, float]:
        value = raw.get(key, list(default))
        valid = (
            isinstance(value, list) and len(value) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            and all((v > 0 if low_exclusive else v >= 0) and v <= 1 for v in value)
        )
        if not valid:
            bound = "above 0 and at most 1" if low_exclusive else "from 0 to 1"
            raise ConfigError(f"{path}: '{key}' is {value!r}, expected three numbers {bound} (red, green, blue).")
        return (float(value[0]), float(value[1]), float(value[2]))

    mean, std = colour("image_mean", CLIP_MEAN, False), colour("image_std", CLIP_STD, True)
    return PreprocessorValues(size, crop, resample, mean, std)


def read_json_object(path: Path, error: type[XvlmError], what: str) -> dict[str, Any]:
    """The JSON object in a checkpoint's file; anything else raises `error` with a sentence naming the file."""
    data = read_regular_file(path, MAX_CONFIG_BYTES, error, what)
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{path}: cannot read {what} ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: {what} is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    except RecursionError:
        raise error(f"{path}: {what} is nested too deeply to be a real one.") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: {what} is not a JSON object.")
    return raw


def load_config(folder: Path) -> XvlmConfig:
    path = folder / "config.json"
    if not path.exists() and not path.is_symlink():
        raise ConfigError(f"{path}: no config.json in this folder; it is not a model checkpoint.")
    return parse_config(read_json_object(path, ConfigError, "the config"), path)
