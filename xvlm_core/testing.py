"""Random checkpoints in the authors' format, for tests, demos and `xvlm bench --synthetic`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig

from xvlm_core.model.checkpoint import EMBEDDED_TOWER_PREFIX, PROJECTOR_PREFIX
from xvlm_core.model.config import parse_config
from xvlm_core.model.images import CLIP_MEAN, CLIP_STD
from xvlm_core.model.network import XmodelVLM


@dataclass(frozen=True)
class TowerShape:
    hidden_size: int = 32
    intermediate_size: int = 64
    num_hidden_layers: int = 3
    num_attention_heads: int = 2
    image_size: int = 336
    patch_size: int = 14

    def clip_config(self) -> CLIPVisionConfig:
        return CLIPVisionConfig(**vars(self), projection_dim=self.hidden_size, hidden_act="quick_gelu")


@dataclass(frozen=True)
class LanguageShape:
    hidden_size: int = 64
    intermediate_size: int = 176
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 32000


FULL_TOWER = TowerShape(1024, 4096, 24, 16, 336, 14)  # CLIP ViT-L/14 @ 336
FULL_LANGUAGE = LanguageShape(2048, 5632, 24, 32, 4, 32000)  # Xmodel-LM 1.1B


def config_dict(
    language: LanguageShape,
    tower: TowerShape,
    projector: str = "xdpnet",
    vision_tower: str = "openai/clip-vit-large-patch14-336",
) -> dict:
    """A config.json as the authors' training code writes it."""
    return {
        "architectures": ["XmodelLMForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_xmodel.XModelConfig"},
        "model_type": "xmodelvlm",
        **vars(language),
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "tie_word_embeddings": False,
        "mm_vision_tower": vision_tower,
        "vision_tower_type": "clip",
        "mm_projector_type": projector,
        "mm_hidden_size": tower.hidden_size,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "use_mm_proj": True,
        "torch_dtype": "float32",
    }


def random_state(
    config: dict, tower: TowerShape, seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Random weights under the authors' key names, tower embedded, rotary buffers included."""
    parsed = parse_config(config, Path("config.json"))
    full_tower = tower.clip_config()
    with torch.device("meta"):
        network = XmodelVLM(parsed, full_tower)
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def fill(prefix: str, module: torch.nn.Module) -> None:
        for key, meta in module.state_dict().items():
            if key.endswith(
                (
                    "norm.weight",
                    "layernorm.weight",
                    "layer_norm1.weight",
                    "layer_norm2.weight",
                    "pre_layrnorm.weight",
                    "post_layernorm.weight",
                )
            ):
                tensor = 1 + 0.1 * torch.randn(meta.shape, generator=generator)
            else:
                tensor = torch.randn(meta.shape, generator=generator) * (1 / math.sqrt(meta.shape[-1]))
            state[prefix + key] = tensor.to(dtype)

    fill("", network.language_model)
    assert network.projector is not None
    fill(PROJECTOR_PREFIX, network.projector)
    with torch.device("meta"):
        tower_model = type(network.vision_tower.clip)(full_tower)  # all layers, as saved by the original
    fill(EMBEDDED_TOWER_PREFIX + "vision_model.", tower_model)
    head_dim = parsed.language.hidden_size // parsed.language.num_attention_heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for layer in range(parsed.language.num_hidden_layers):
        state[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    # EOS never wins a greedy choice, so benchmarks always generate the tokens they ask for.
    state["lm_head.weight"][parsed.language.eos_token_id] = 0
    return state


def write_tokenizer(folder: Path) -> Path:
    """A small SentencePiece model trained on the standard library's docstrings (no download needed)."""
    import inspect
    import json as json_module
    import pathlib
    import textwrap

    corpus = folder / "corpus.txt"
    lines = [
        line.strip()
        for module in (inspect, json_module, pathlib, textwrap)
        for line in (inspect.getsource(module).splitlines())
        if line.strip()
    ]
    corpus.write_text("\n".join(lines), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=2000,
        model_type="unigram",
        byte_fallback=True,
        character_coverage=1.0,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        minloglevel=2,
    )
    corpus.unlink()
    (folder / "tokenizer.vocab").unlink(missing_ok=True)
    return folder / "tokenizer.model"


def write_checkpoint(
    folder: Path,
    tokenizer_file: Path | None = None,
    language: LanguageShape = LanguageShape(),
    tower: TowerShape = TowerShape(),
    projector: str = "xdpnet",
    weight_format: str = "safetensors",
    shards: int = 1,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Path:
    """Write a random checkpoint folder (config, tokenizer, weights) in the authors' layout."""
    folder.mkdir(parents=True, exist_ok=True)
    config = config_dict(language, tower, projector)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    if tokenizer_file is None:
        write_tokenizer(folder)
    else:
        (folder / "tokenizer.model").write_bytes(tokenizer_file.read_bytes())
    state = random_state(config, tower, seed=seed, dtype=dtype)
    write_weights(folder, state, weight_format, shards)
    return folder


def write_weights(
    folder: Path, state: dict[str, torch.Tensor], weight_format: str = "safetensors", shards: int = 1
) -> None:
    suffix = ".safetensors" if weight_format == "safetensors" else ".bin"
    stem = "model" if weight_format == "safetensors" else "pytorch_model"
    keys = sorted(state)
    if shards == 1:
        _save(state, folder / f"{stem}{suffix}")
        return
    weight_map = {}
    for index in range(shards):
        name = f"{stem}-{index + 1:05d}-of-{shards:05d}{suffix}"
        part = {key: state[key] for key in keys[index::shards]}
        _save(part, folder / name)
        weight_map.update({key: name for key in part})
    index_json = {"metadata": {}, "weight_map": weight_map}
    (folder / f"{stem}{suffix}.index.json").write_text(json.dumps(index_json), encoding="utf-8")


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    contiguous = {key: value.contiguous() for key, value in state.items()}
    if path.suffix == ".safetensors":
        save_file(contiguous, str(path), metadata={"format": "pt"})
    else:
        torch.save(contiguous, path)


def write_tower(folder: Path, tower: TowerShape = TowerShape(), seed: int = 0, full_clip: bool = False) -> Path:
    """A vision-tower folder: config, preprocessor config, weights (optionally in full-CLIP layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    clip = tower.clip_config().to_dict()
    config = {"model_type": "clip", "vision_config": clip} if full_clip else {**clip, "model_type": "clip_vision_model"}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    preprocessor = {
        "crop_size": tower.image_size,
        "size": tower.image_size,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "resample": 3,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor), encoding="utf-8")
    state = {
        key.removeprefix(EMBEDDED_TOWER_PREFIX): value
        for key, value in random_state(config_dict(LanguageShape(), tower), tower, seed).items()
        if key.startswith(EMBEDDED_TOWER_PREFIX)
    }
    if full_clip:
        state["text_model.embeddings.token_embedding.weight"] = torch.zeros(8, tower.hidden_size)
        state["logit_scale"] = torch.tensor(4.6)
    _save(state, folder / "model.safetensors")
    return folder
