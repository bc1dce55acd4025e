"""Loading a checkpoint into an XmodelVLM on PyTorch: device, number format, 8- or 4-bit weights, the tower."""

from __future__ import annotations

import gc
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPVisionConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from xvlm_core import hub
from xvlm_core.engines.language import LanguageModel
from xvlm_core.engines.pytorch import fused, onednn
from xvlm_core.engines.pytorch.device import dtype_name, memory_in_use_mb, pick_device, pick_dtype, release_freed_memory
from xvlm_core.engines.pytorch.quantize import QuantizedLinear, quantizable_linears, quantized_linear
from xvlm_core.errors import CheckpointError, Remedy, XvlmError
from xvlm_core.model import checkpoint
from xvlm_core.model.checkpoint import EMBEDDED_TOWER_PREFIX, PROJECTOR_PREFIX
from xvlm_core.model.config import XvlmConfig, check_tower_config, load_config, read_json_object
from xvlm_core.model.network import XmodelVLM
from xvlm_core.model.tokenizer import Tokenizer, find_tokenizer_file
from xvlm_core.model.towers import KNOWN_TOWERS
from xvlm_core.model.vision import ImagePreprocessor
from xvlm_core.precisions import QUANTIZE_CHOICES
from xvlm_core.stages import LOADING_LANGUAGE_QUANTIZED, Stage

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """Everything needed to answer: the network, its tokenizer and its image preprocessing."""

    name: str
    model: XmodelVLM
    tokenizer: Tokenizer
    preprocess: ImagePreprocessor | None
    device: torch.device
    dtype: torch.dtype
    quantize: str = "none"  # "int8", "int4": the language model's linear layers hold 8- or 4-bit weights
    load_s: float = 0.0
    engine: str = "pytorch"  # what runs the language model: "pytorch" (the network's own) or "llama.cpp"
    # A new cache on the engine that runs the language model, for each session; None: the network's own, in PyTorch.
    open_language: Callable[[], LanguageModel] | None = None
    language_file: Path | None = None  # the file that other engine runs the language model from
    language_dtype: torch.dtype | None = None  # that file's exact number format where it is not `dtype`

    @property
    def config(self) -> XvlmConfig:
        return self.model.config

    @property
    def context_length(self) -> int:
        return self.config.language.max_position_embeddings

    @property
    def can_see_images(self) -> bool:
        return self.model.vision_tower is not None

    def summary(self) -> dict[str, str | float | bool]:
        """Plain values for people and for code that must not touch torch (the app's UI thread)."""
        return {
            "name": self.name,
            "device": str(self.device),
            "dtype": dtype_name(self.language_dtype or self.dtype),
            "quantize": self.quantize,
            "engine": self.engine,
            "memory_mb": memory_in_use_mb(self.device),
            "load_s": self.load_s,
            "can_see_images": self.can_see_images,
            "context_length": self.context_length,
        }


@dataclass(frozen=True)
class TowerSource:
    clip_config: CLIPVisionConfig
    folder: Path | None  # tower folder (config, preprocessor, maybe weights)
    weight_files: list[Path]  # where the tower's weights are read from
    prefix: str  # key prefix in those files, up to and including "vision_model."


def read_clip_config(folder: Path) -> CLIPVisionConfig:
    path = folder / "config.json"
    raw = read_json_object(path, CheckpointError, "the vision tower's config")
    vision = raw.get("vision_config", raw)
    if not isinstance(vision, dict) or vision.get("model_type", "clip_vision_model") not in (
        "clip_vision_model",
        "clip",
    ):
        raise CheckpointError(f"{path}: not a CLIP vision tower config.")
    check_tower_config(vision, path)
    fields = {key: value for key, value in vision.items() if key in CLIPVisionConfig().to_dict()}
    return CLIPVisionConfig(**fields)


def resolve_tower(
    config: XvlmConfig, checkpoint_files: list[Path], checkpoint_keys: set[str], override: str | None
) -> TowerSource | None:
    """Where the vision tower's shape and weights come from: override, mm_vision_tower, or embedded weights."""
    embedded = any(key.startswith(EMBEDDED_TOWER_PREFIX) for key in checkpoint_keys)
    embedded_source = (checkpoint_files, EMBEDDED_TOWER_PREFIX + "vision_model.")
    name = override or config.vision.tower
    if not name:
        return None
    if not Path(name).expanduser().is_dir():
        # Configs often hold a path from the authors' machine; its folder name says which hub repo it was.
        name = hub.tower_repo_id(name) or name
    folder = _find_tower_folder(name, must_exist=override is not None or not embedded)
    if folder is not None:
        clip_config = read_clip_config(folder)
        try:
            files, prefix = checkpoint.find_weight_files(folder), "vision_model."
        except CheckpointError:
            if not embedded:
                raise
            files, prefix = embedded_source
        return TowerSource(clip_config, folder, files, prefix)
    if name in KNOWN_TOWERS:
        return TowerSource(CLIPVisionConfig(**KNOWN_TOWERS[name]), None, *embedded_source)
    raise CheckpointError(
        f"The checkpoint embeds a vision tower but names '{name}', whose shape is unknown.",
        code=Remedy.CHOOSE_VISION_TOWER,
    )


def _find_tower_folder(name: str, must_exist: bool) -> Path | None:
    try:
        return hub.resolve_folder(name, what="vision tower")
    except CheckpointError:
        if must_exist:
            raise
        return None


@contextmanager
def _about_the_tower() -> Iterator[None]:
    """What fails while finding or reading the vision tower is fixed by choosing the tower's folder, not the
    model's (a hub name that is not downloaded keeps its repo id)."""
    try:
        yield
    except XvlmError as exc:
        if exc.code in (Remedy.CHOOSE_MODEL, Remedy.DOWNLOAD_MODEL):
            exc.code = Remedy.CHOOSE_VISION_TOWER
        raise


def load_model(
    model: str,
    vision_tower: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    on_stage: Callable[[str], None] = lambda stage: None,
    quantize: str = "none",
    language_weights: bool = True,
) -> LoadedModel:
    """Load a checkpoint folder or cached hub repo, ready to answer on `device` in `dtype`.

    `quantize="int8"` converts the language model's linear layers to int8 weights as they are read, and
    `"int4"` to 4-bit ones; in both the vision tower's are int8 (its hundreds of rows a call are compute-bound,
    and on an x86 CPU 8-bit rows multiply by them in integers, `quantize.DynamicInt8Linear`).
    Without `language_weights` the language model stays on the meta device, weightless: another engine runs it.
    """
    if quantize not in QUANTIZE_CHOICES:
        raise XvlmError(f"'{quantize}' is not a weight precision (use {' or '.join(QUANTIZE_CHOICES)}).")
    started = time.perf_counter()
    times: dict[str, float] = {}
    on_stage(Stage.READING_CHECKPOINT)
    folder = hub.resolve_folder(model)
    config = load_config(folder)
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(torch_device, dtype)
    tokenizer = Tokenizer(find_tokenizer_file(folder))
    if tokenizer.vocab_size > config.language.vocab_size:
        raise CheckpointError(
            f"{folder}: the tokenizer has {tokenizer.vocab_size} pieces "
            f"but the model only {config.language.vocab_size}."
        )
    files = checkpoint.find_weight_files(folder)
    keys = checkpoint.weight_keys(files)
    with _about_the_tower():
        tower = resolve_tower(config, files, keys, vision_tower)

    with torch.device("meta"):
        network = XmodelVLM(config, tower.clip_config if tower else None)

    int8 = torch_dtype if quantize != "none" else None
    if tower is not None:
        tick = time.perf_counter()
        on_stage(Stage.LOADING_TOWER)
        with _about_the_tower():
            _load_tower(network, tower, int8, torch_device)
        times["vision_tower_s"] = time.perf_counter() - tick
    quantized: set[str] = set()
    if int8 is not None and language_weights:
        tick = time.perf_counter()
        on_stage(LOADING_LANGUAGE_QUANTIZED[quantize])
        quantized = _load_quantized_linears(network.language_model, files, int8, torch_device, kind=quantize)
        times["quantize_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    on_stage(Stage.LOADING_LANGUAGE if language_weights else Stage.LOADING_PROJECTOR)
    _load_language_and_projector(network, files, tower is not None, quantized, language_weights)
    times["language_model_s"] = time.perf_counter() - tick

    _rebuild_buffers(network)
    if language_weights:
        network = network.to(device=torch_device, dtype=torch_dtype).eval()
    else:
        for part in (network.vision_tower, network.projector):
            if part is not None:
                part.to(device=torch_device, dtype=torch_dtype)
        network.eval()
    # The rotary frequencies stay float32, as in the original, whatever the weights' dtype.
    network.language_model.model.rotary_emb = LlamaRotaryEmbedding(network.language_model.config).to(torch_device)
    # Last: the layers laid out for oneDNN could not be moved or cast again.
    onednn.lay_out_linears(network.language_model)
    _read_in(network)
    log.debug("loaded %s: %s", model, ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in times.items()))
    preprocess = None
    if tower is not None:
        with _about_the_tower():
            preprocess = ImagePreprocessor.from_folder(
                tower.folder, tower.clip_config.image_size, config.vision.image_aspect_ratio
            )
    return LoadedModel(
        name=model,
        model=network,
        tokenizer=tokenizer,
        preprocess=preprocess,
        device=torch_device,
        dtype=torch_dtype,
        quantize=quantize,
        load_s=time.perf_counter() - started,
    )


def _load_tower(network: XmodelVLM, tower: TowerSource, int8: torch.dtype | None, device: torch.device) -> None:
    """The tower's weights; with `int8` (the activations' dtype) its linear layers as 8-bit weights for `device`."""
    assert network.vision_tower is not None
    kept = network.vision_tower.kept_layers
    where = f"vision tower ({tower.weight_files[0].parent})"
    try:
        _read_tower(network.vision_tower.clip, tower, kept, int8, device, where)
    except CheckpointError as exc:
        if tower.folder is not None:
            raise
        raise CheckpointError(
            f"The vision tower embedded in the checkpoint does not match the shape its config names ({exc}).",
            code=Remedy.CHOOSE_VISION_TOWER,
        ) from None


def _read_tower(
    clip: nn.Module, tower: TowerSource, kept: int, int8: torch.dtype | None, device: torch.device, where: str
) -> None:
    quantized = set()
    if int8 is not None:
        quantized = _load_quantized_linears(clip, tower.weight_files, int8, device, tower.prefix)

    def wanted(key: str) -> bool:
        return key.startswith(tower.prefix) and key not in quantized

    raw = checkpoint.read_weights(tower.weight_files, wanted)
    state = {}
    for key, tensor in raw.items():
        local = key[len(tower.prefix) :]
        if local == "embeddings.position_ids":
            continue  # an old persistent buffer; rebuilt below
        if local.startswith("encoder.layers."):
            layer = int(local.split(".")[2])
            if layer >= kept:
                continue  # layers after the selected one never influence the features
        state[local] = tensor
    _assign(clip, state, where, skip=QuantizedLinear)


def _load_quantized_linears(
    module: nn.Module, files: list[Path], dtype: torch.dtype, device: torch.device, prefix: str = "", kind: str = "int8"
) -> set[str]:
    """Read `module`'s linear weights (keys `prefix` + name) one layer at a time, each straight into `kind` for
    `device`.

    Each read maps the file anew and drops it before the next, so the float weights are never all in
    memory: only the layer being converted. Layers that read the same input (`fused.FUSED_GROUPS`) and take the
    same precision become one. Returns the checkpoint keys read.
    """
    linears = quantizable_linears(module, kind, device)
    layers: dict[str, list[str]] = {}
    for name in linears:
        layer = re.match(r".*\blayers\.\d+\.", name)
        layers.setdefault(layer.group(0) if layer else name, []).append(name)
    where = str(files[0].parent)
    read: set[str] = set()
    for names in layers.values():
        keys = {f"{prefix}{name}.{part}" for name in names for part in ("weight", "bias")}
        raw = checkpoint.read_weights(files, keys.__contains__)
        weights = {name: _linear_weights(raw, prefix, name, linears[name], where) for name in names}
        for fused_name, members in fused.fused_groups(names).items():
            layer_class = quantized_linear(members[0], kind, device)
            biases = [weights[name][1] for name in members]
            if any(quantized_linear(name, kind, device) is not layer_class for name in members) or (
                len({bias is None for bias in biases}) > 1
            ):
                continue
            weight = torch.cat([weights.pop(name)[0] for name in members])  # [sum of outs, in]
            bias = None if biases[0] is None else torch.cat(biases)
            fused.install(module, fused_name, members, layer_class.from_weight(weight, bias, dtype))
            del weight
        for name, (weight, bias) in weights.items():
            module.set_submodule(name, quantized_linear(name, kind, device).from_weight(weight, bias, dtype))
        del weights
        read |= set(raw)
        del raw
        gc.collect(1)  # the reader's objects hold the file's mapping in reference cycles: free it now
        release_freed_memory()  # and the float temporaries of this layer's conversion
    return read


def _linear_weights(
    raw: dict[str, torch.Tensor], prefix: str, name: str, meta: nn.Linear, where: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Layer `name`'s weight and bias from `raw`, checked against the shapes of its unloaded module `meta`."""
    weight, bias = raw.get(f"{prefix}{name}.weight"), raw.get(f"{prefix}{name}.bias")
    if weight is None:
        raise CheckpointError(f"{where}: the weight '{name}.weight' is missing.")
    if tuple(weight.shape) != tuple(meta.weight.shape) or (bias is None) != (meta.bias is None):
        raise CheckpointError(
            f"{where}: '{name}.weight' has shape {tuple(weight.shape)} but the config implies "
            f"{tuple(meta.weight.shape)}."
        )
    return weight, bias


def _load_language_and_projector(
    network: XmodelVLM, files: list[Path], with_vision: bool, already_loaded: set[str], language_weights: bool = True
) -> None:
    def wanted(key: str) -> bool:
        if key in already_loaded or (not language_weights and not key.startswith(PROJECTOR_PREFIX)):
            return False
        return not key.startswith(EMBEDDED_TOWER_PREFIX) and not key.endswith("rotary_emb.inv_freq")

    raw = checkpoint.read_weights(files, wanted)
    language, projector, unexpected = {}, {}, []
    for key, tensor in raw.items():
        if key.startswith(PROJECTOR_PREFIX):
            projector[key[len(PROJECTOR_PREFIX) :]] = tensor
        elif key.startswith(("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")):
            language[key] = tensor
        else:
            unexpected.append(key)
    where = str(files[0].parent)
    if unexpected:
        raise CheckpointError(
            f"{where}: {len(unexpected)} weights do not belong to an Xmodel-VLM model (first: {unexpected[0]})."
        )
    if language_weights:
        _assign(network.language_model, language, where, skip=QuantizedLinear)
    if with_vision:
        assert network.projector is not None
        _assign(network.projector, projector, f"{where} (projector)")


def _assign(module: nn.Module, state: dict[str, torch.Tensor], where: str, skip: type | None = None) -> None:
    """Load `state` into a meta-device module, requiring every key and every shape to match.

    Submodules of type `skip` are already loaded and left as they are.
    """
    loaded = [f"{name}." for name, child in module.named_modules() if skip is not None and isinstance(child, skip)]
    expected = {key: value for key, value in module.state_dict().items() if not key.startswith(tuple(loaded))}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(f"{where}: {len(missing)} weights are missing (first: {missing[0]}).")
    if unexpected:
        raise CheckpointError(f"{where}: weights the model does not have (first: {unexpected[0]}).")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{where}: '{key}' has shape {tuple(tensor.shape)} but the config implies {tuple(expected[key].shape)}."
            )
    module.load_state_dict(state, strict=not loaded, assign=True)  # every other key was checked above


@torch.inference_mode()
def _read_in(network: nn.Module) -> None:
    """Touch every page of weights still memory-mapped from the checkpoint file.

    Otherwise the disk is read during the first answer, page by page, and loading only looks fast.
    """
    for parameter in network.parameters():
        # oneDNN's layers were read as they were laid out.
        readable = parameter.device.type == "cpu" and not parameter.is_mkldnn and parameter.is_contiguous()
        if readable and parameter.numel():
            step = max(1, 4096 // parameter.element_size())  # one element per 4 KiB page
            parameter.view(-1)[::step].sum()


def _rebuild_buffers(network: XmodelVLM) -> None:
    """Non-persistent buffers were created on the meta device; compute them for real, on the CPU."""
    # The rotary embedding is built once the network is on its device (its frequencies stay float32); until
    # then there is none, so that moving the network meets no meta buffer.
    network.language_model.model.rotary_emb = None
    if network.vision_tower is not None:
        embeddings = network.vision_tower.clip.embeddings
        positions = torch.arange(embeddings.num_positions).expand((1, -1))
        embeddings.register_buffer("position_ids", positions, persistent=False)
