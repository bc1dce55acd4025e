"""Loading checkpoints: formats, shards, tower sources, and clear errors for everything that can be wrong."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.session import ChatSession
from xvlm_core.errors import CheckpointError, ConfigError, DeviceError, Remedy
from xvlm_core.model.config import load_config
from xvlm_core.model.projector import XDPProjector
from xvlm_core.model.prompt import Message
from xvlm_core.sampling import SamplingSettings
from xvlm_core.testing import (
    LanguageShape,
    TowerShape,
    config_dict,
    random_state,
    write_checkpoint,
    write_tower,
    write_weights,
)


def answer_ids(loaded, images_dir: Path, tokens: int = 8) -> list[int]:
    answer = ChatSession(loaded).answer(
        [Message("user", "What is in this image?", [str(images_dir / "gradient_square.png")])],
        SamplingSettings(max_new_tokens=tokens),
    )
    list(answer)
    return answer.result.output_ids


def copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    for path in target.iterdir():
        os.chmod(path, 0o644)
    return target


def test_xdp_concatenates_four_consecutive_tokens():
    projector = XDPProjector(in_features=2, out_features=3)
    features = torch.arange(16, dtype=torch.float32).reshape(1, 8, 2)  # 8 tokens of width 2
    seen = {}

    def record_input(module, inputs, output) -> None:
        seen["input"] = inputs[0]

    projector.mlp[0].register_forward_hook(record_input)
    projector(features)
    assert seen["input"].shape == (1, 2, 8)
    assert seen["input"][0, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # tokens 0..3, not a 2x2 block
    assert isinstance(projector.mlp[1], torch.nn.Mish)


def test_sharded_safetensors_load_like_single_file(tmp_path, tiny_model_dir, tiny_tower_dir, images_dir):
    from safetensors.torch import load_file

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for name in ("config.json", "xmodel_32000.model", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, sharded / name)
    write_weights(sharded, load_file(tiny_model_dir / "model.safetensors"), shards=3)
    assert (sharded / "model.safetensors.index.json").is_file()
    reference = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32")
    loaded = load_model(str(sharded), vision_tower=str(tiny_tower_dir), dtype="float32")
    assert answer_ids(loaded, images_dir) == answer_ids(reference, images_dir)


@pytest.mark.parametrize("shard", ["/etc/passwd", "../outside.safetensors", "sub/../../outside.safetensors"])
def test_shard_index_naming_a_file_outside_the_folder_is_refused(tmp_path, tiny_model_dir, tiny_tower_dir, shard):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "xmodel_32000.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_model_dir / name, folder / name)
    (tmp_path / "outside.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    weight_map = {"model.norm.weight": shard}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError) as error:
        load_model(str(folder), vision_tower=str(tiny_tower_dir), dtype="float32")
    assert f"Refused the file name {shard!r} from {folder / 'model.safetensors.index.json'}" in str(error.value)


def test_embedded_tower_needs_only_the_tower_config(tmp_path, tiny_model_dir, tiny_tower_dir, images_dir, monkeypatch):
    # A hub cache holding only the tower's config files (the checkpoint embeds its weights).
    snapshot = Path(os.environ["HF_HUB_CACHE"]) / "models--openai--clip-vit-large-patch14-336" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(tiny_tower_dir / name, snapshot / name)
    embedded = load_model(str(tiny_model_dir), dtype="float32")
    separate = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32")
    assert answer_ids(embedded, images_dir) == answer_ids(separate, images_dir)


def test_tower_in_full_clip_layout_with_text_half_is_accepted(tmp_path, images_dir):
    tower = write_tower(tmp_path / "clip", TowerShape(), full_clip=True)
    model = write_checkpoint(tmp_path / "model", tokenizer_file=None)
    loaded = load_model(str(model), vision_tower=str(tower), dtype="float32")
    assert len(answer_ids(loaded, images_dir, 4)) == 4


@pytest.mark.parametrize("projector", ["linear", "mlp2x_gelu", "xdpnetv10_4"])
def test_other_projector_types_load(tmp_path, projector, images_dir, tiny_model_dir, tiny_tower_dir):
    model = write_checkpoint(
        tmp_path / "model", tokenizer_file=tiny_model_dir / "xmodel_32000.model", projector=projector
    )
    loaded = load_model(str(model), vision_tower=str(tiny_tower_dir), dtype="float32")
    assert loaded.model.image_tokens == (144 if projector.startswith("xdp") else 576)
    assert len(answer_ids(loaded, images_dir, 4)) == 4


def test_missing_folder_and_missing_config(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="no config.json"):
        load_model(str(tmp_path))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "bert"}, "not an Xmodel-VLM"),
        ({"mm_projector_type": "qformer"}, "mm_projector_type 'qformer'"),
        ({"hidden_size": "big"}, "'hidden_size' is 'big'"),
        ({"vision_tower_type": "siglip"}, "vision_tower_type"),
    ],
)
def test_bad_config_values_are_named(tmp_path, tiny_model_dir, change, message):
    raw = json.loads((tiny_model_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, **change}))
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path)


def test_config_that_is_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path)


@pytest.mark.parametrize("source", ["xmodel-vlm-tiny", "xmodel-vlm-tiny-bin"])
def test_truncated_weights_say_incomplete(tmp_path, fixtures_dir, tiny_tower_dir, source):
    folder = copy_checkpoint(fixtures_dir / source, tmp_path / source)
    weights = next(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{weights.name}.*incomplete or corrupt"):
        load_model(str(folder), vision_tower=str(tiny_tower_dir))


def test_bin_with_code_is_refused_and_never_runs(tmp_path, tiny_model_bin_dir, tiny_tower_dir):
    folder = copy_checkpoint(tiny_model_bin_dir, tmp_path / "evil")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model.norm.weight": torch.ones(64), "x": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        load_model(str(folder), vision_tower=str(tiny_tower_dir))
    assert not marker.exists()


def test_missing_weight_is_named(tmp_path, tiny_model_dir, tiny_tower_dir):
    from safetensors.torch import load_file

    folder = copy_checkpoint(tiny_model_dir, tmp_path / "model")
    state = load_file(tiny_model_dir / "model.safetensors")
    del state["model.layers.1.mlp.down_proj.weight"]
    write_weights(folder, state)
    with pytest.raises(CheckpointError, match="missing.*model.layers.1.mlp.down_proj.weight"):
        load_model(str(folder), vision_tower=str(tiny_tower_dir))


def test_unexpected_weight_is_not_silently_dropped(tmp_path, tiny_model_dir, tiny_tower_dir):
    from safetensors.torch import load_file

    folder = copy_checkpoint(tiny_model_dir, tmp_path / "model")
    state = load_file(tiny_model_dir / "model.safetensors")
    state["model.extra_head.weight"] = torch.zeros(2)
    write_weights(folder, state)
    with pytest.raises(CheckpointError, match="model.extra_head.weight"):
        load_model(str(folder), vision_tower=str(tiny_tower_dir))


def test_shape_that_does_not_fit_the_config_is_named(tmp_path, tiny_model_dir, tiny_tower_dir):
    folder = copy_checkpoint(tiny_model_dir, tmp_path / "model")
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "intermediate_size": 172}))
    with pytest.raises(CheckpointError, match=r"has shape \(.*176.*\) but the config implies \(.*172.*\)"):
        load_model(str(folder), vision_tower=str(tiny_tower_dir))


def test_unknown_embedded_tower_without_config_asks_for_vision_tower(tmp_path, tiny_model_dir):
    folder = copy_checkpoint(tiny_model_dir, tmp_path / "model")
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "mm_vision_tower": "/data/models/some-tower"}))
    with pytest.raises(CheckpointError) as raised:
        load_model(str(folder))
    assert raised.value.code is Remedy.CHOOSE_VISION_TOWER  # the command says --vision-tower, the window its setting


def test_embedded_tower_that_does_not_match_its_name_asks_for_vision_tower(tiny_model_dir):
    # The fixture names openai/clip-vit-large-patch14-336 but embeds a tiny tower.
    with pytest.raises(CheckpointError, match="does not match") as raised:
        load_model(str(tiny_model_dir))
    assert raised.value.code is Remedy.CHOOSE_VISION_TOWER


def test_forced_device_that_does_not_exist(tiny_model_dir, tiny_tower_dir):
    with pytest.raises(DeviceError):
        load_model(
            str(tiny_model_dir),
            vision_tower=str(tiny_tower_dir),
            device="cuda:3" if not torch.cuda.is_available() else "cuda:99",
        )


def test_dtype_choice_is_applied(tiny_model_dir, tiny_tower_dir):
    loaded = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="bfloat16")
    assert next(loaded.model.language_model.parameters()).dtype == torch.bfloat16
    assert loaded.model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32


def test_selected_layer_and_later_ones_are_not_built(tiny_model_dir, tiny_tower_dir):
    loaded = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32")
    assert len(loaded.model.vision_tower.clip.encoder.layers) == 2  # of 3; layer -2 is the output of layer 2


def test_random_state_round_trips_through_pickle_free_formats():
    state = random_state(config_dict(LanguageShape(), TowerShape()), TowerShape())
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    assert not any(isinstance(value, type(pickle)) for value in state.values())


def test_tower_path_from_the_authors_machine_is_found_in_the_cache(tiny_model_bin_dir, tiny_tower_dir, images_dir):
    # xmodel-vlm-tiny-bin names /data/models/clip-vit-large-patch14-336, which does not exist here.
    snapshot = Path(os.environ["HF_HUB_CACHE"]) / "models--openai--clip-vit-large-patch14-336" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    for path in tiny_tower_dir.iterdir():
        shutil.copy(path, snapshot / path.name)
    from_cache = load_model(str(tiny_model_bin_dir), dtype="float32")
    explicit = load_model(str(tiny_model_bin_dir), vision_tower=str(tiny_tower_dir), dtype="float32")
    assert answer_ids(from_cache, images_dir) == answer_ids(explicit, images_dir)


@pytest.mark.parametrize("name", ["config.json", "preprocessor_config.json"])
def test_damaged_tower_config_file_is_named(tmp_path, tiny_model_dir, tiny_tower_dir, name):
    tower = copy_checkpoint(tiny_tower_dir, tmp_path / "tower")
    (tower / name).write_text('{"size": 336,')
    with pytest.raises(CheckpointError, match=f"{name}: .* is not valid JSON"):
        load_model(str(tiny_model_dir), vision_tower=str(tower))
