"""Quantized linear layers that read the same input multiplied as one: a layer's q, k and v projections, and its
gate and up projections.

Decoding a token calls each product once per layer, and on a CPU a small quantized product costs more in its
call than in its bytes: rotating and quantizing the row, the kernel's setup, the scaling after. One call for q, k
and v and one for gate and up make 4 calls a decoder layer instead of 7; an 8-bit Xmodel-LM layer's products took
1.2 ms instead of 1.5-1.8 (AMD Zen 3, 2 threads, one row). The fused weights are the members' rows one after
another, quantized row by row (int8) or in groups along each row (int4), so every member's weights and products are
the ones it would have had alone.

transformers' attention and MLP modules (and `decode_step`) call the members one after another on the same tensor;
each member is a `ProductPart` that asks the shared `FusedProduct` for its columns, and the product is computed once
for that tensor. A member called on another tensor still gets the right answer, computed anew.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from xvlm_core.engines.pytorch.quantize import QuantizedLinear

# The fused layer's name beside its members, and the members, in the order their rows are stacked.
FUSED_GROUPS = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_up_proj": ("gate_proj", "up_proj"),
}


class FusedProduct(nn.Module):
    """One quantized layer holding the rows of several, and the last product until each member has taken its part."""

    def __init__(self, layer: QuantizedLinear, widths: Sequence[int]):
        super().__init__()
        if sum(widths) != layer.out_features:
            raise ValueError(f"members of {list(widths)} outputs for a layer of {layer.out_features}")
        self.layer = layer
        self.starts = [sum(widths[:index]) for index in range(len(widths) + 1)]
        self._input: torch.Tensor | None = None
        self._output: torch.Tensor | None = None
        self._waiting: set[int] = set()

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Member `index`'s output for `x` [..., in]: its columns of the fused product [..., out_index]."""
        if x is not self._input or index not in self._waiting:
            self._input, self._output = x, self.layer(x)  # [..., in] -> [..., sum of widths]
            self._waiting = set(range(len(self.starts) - 1))
        assert self._output is not None
        output = self._output[..., self.columns(index)]
        self._waiting.discard(index)
        if not self._waiting:  # every member has its part: hold no prompt-sized tensors until the next call
            self._input = self._output = None
        return output

    def columns(self, index: int) -> slice:
        """Where member `index`'s outputs are among the fused layer's."""
        return slice(self.starts[index], self.starts[index + 1])


class ProductPart(nn.Module):
    """A member of a `FusedProduct`, where its own linear layer was: the same inputs, the same outputs."""

    def __init__(self, product: FusedProduct, index: int):
        super().__init__()
        self.__dict__["product"] = product  # not a submodule: the fused layer is registered once, beside its members
        self.index = index
        self.in_features = product.layer.in_features
        self.columns = product.columns(index)
        self.out_features = self.columns.stop - self.columns.start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.product.part(x, self.index)

    def dequantized(self) -> torch.Tensor:
        """This member's rows of the fused weights, float32 [out, in]."""
        return self.product.layer.dequantized()[self.columns]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, part {self.index} of a fused layer"


def fused_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Of `names` (qualified), the groups whose members are all there: {fused layer's name: members' names}."""
    present = set(names)
    groups = {}
    for name in names:
        parent, _, leaf = name.rpartition(".")
        for fused, members in FUSED_GROUPS.items():
            qualified = [f"{parent}.{member}" if parent else member for member in members]
            if leaf == members[0] and present.issuperset(qualified):
                groups[f"{parent}.{fused}" if parent else fused] = qualified
    return groups


def install(module: nn.Module, fused_name: str, members: Sequence[str], layer: QuantizedLinear) -> None:
    """Put `layer` (the members' rows stacked) at `fused_name` inside `module`, and a `ProductPart` at each member."""
    widths = [module.get_submodule(name).out_features for name in members]
    product = FusedProduct(layer, widths)
    module.set_submodule(fused_name, product)
    for index, name in enumerate(members):
        module.set_submodule(name, ProductPart(product, index))


def named_products(module: nn.Module) -> dict[str, nn.Module]:
    """Every quantized product inside `module` by the name of the linear layer it stands for: each `ProductPart`,
    and each `QuantizedLinear` that is not the inside of a fused layer."""
    fused = [f"{name}." for name, child in module.named_modules() if isinstance(child, FusedProduct)]
    return {
        name: child
        for name, child in module.named_modules()
        if isinstance(child, ProductPart) or (isinstance(child, QuantizedLinear) and not name.startswith(tuple(fused)))
    }
