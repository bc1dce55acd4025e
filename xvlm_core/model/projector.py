"""Projectors from vision features to language-model embeddings, chosen by `mm_projector_type`."""

from __future__ import annotations

import re

import torch
from torch import nn

from xvlm_core.errors import ConfigError
from xvlm_core.model.config import ProjectorConfig


class XDPProjector(nn.Module):
    """Xmodel's XDP: fold `factor` consecutive tokens into one, then Linear-Mish-Linear."""

    def __init__(self, in_features: int, out_features: int, factor: int = 4):
        super().__init__()
        self.factor = factor
        self.mlp = nn.Sequential(
            nn.Linear(in_features * factor, out_features),
            nn.Mish(),
            nn.Linear(out_features, out_features),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, tokens, channels = features.shape
        # Row-major view: 4 consecutive tokens in raster order, not a 2x2 spatial block.
        folded = features.reshape(batch, tokens // self.factor, channels * self.factor)  # [B, 576, C] -> [B, 144, 4C]
        return self.mlp(folded)  # [B, 144, hidden]


class LinearProjector(nn.Linear):
    """`linear`: one Linear, weights saved directly under `model.mm_projector`."""


def mlp_gelu_projector(in_features: int, out_features: int, depth: int) -> nn.Sequential:
    """`mlp<N>x_gelu`: Linear, then (GELU, Linear) N-1 times."""
    layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(out_features, out_features)]
    return nn.Sequential(*layers)


def build_projector(config: ProjectorConfig) -> nn.Module:
    kind = config.type
    if kind == "xdpnet":
        return XDPProjector(config.in_features, config.out_features)
    if match := re.fullmatch(r"xdpnetv10_(\d+)", kind):
        return XDPProjector(config.in_features, config.out_features, factor=int(match.group(1)))
    if kind == "linear":
        return LinearProjector(config.in_features, config.out_features)
    if match := re.fullmatch(r"mlp(\d+)x_gelu", kind):
        return mlp_gelu_projector(config.in_features, config.out_features, int(match.group(1)))
    raise ConfigError(f"unknown projector type {kind!r}")
