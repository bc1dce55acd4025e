"""The CLIP vision towers the app knows by name: their hub repos and shapes. Torch-free, so the hub code shares it.

A checkpoint that embeds one of these needs no separate download of its weights, and a config naming one by a
path from its authors' machine still finds it by the folder's name.
"""

from __future__ import annotations

_CLIP_L14 = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
    projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)
# Hub repo id -> the CLIPVisionConfig fields of that tower.
KNOWN_TOWERS: dict[str, dict] = {
    "openai/clip-vit-large-patch14-336": {**_CLIP_L14, "image_size": 336},
    "openai/clip-vit-large-patch14": {**_CLIP_L14, "image_size": 224},
}
DEFAULT_TOWER = "openai/clip-vit-large-patch14-336"  # Xmodel-VLM's, and what a config without one means
