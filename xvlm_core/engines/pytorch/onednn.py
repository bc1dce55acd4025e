"""Linear layers whose float32 weights are laid out once for oneDNN's CPU kernels.

`F.linear` on float32 weights goes to MKL's sgemm with the weights as they are stored; oneDNN multiplies by a
copy reordered into the blocks its kernels read. On an AMD Zen 3 (AVX2, 2 cores) twelve 5632x2048 layers
decoded one row at 20-23 GB/s of weights this way against 12.5-15 with `F.linear`, and 331 rows no slower. Only
the language model's layers are laid out so: their time is spent decoding.
The reordered copy replaces the weights, so memory stays the same.
"""

from __future__ import annotations

import torch
from torch import nn

from xvlm_core.engines.pytorch.device import dtype_name

# The rows the language model's layers are laid out for: one, a decoded token, where its time is spent. The tower
# keeps `F.linear`: its calls are an image's 577 rows, where oneDNN was no faster (the whole tower took 4.5-5.6 s
# against 2.8-3.7).
DECODE_ROWS = 1


def available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether float weights on `device` in `dtype` can be laid out for oneDNN: float32 on a CPU with it.

    bfloat16 is left to `F.linear` until it is measured on a processor with bf16 instructions.
    """
    return device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()


class OneDnnLinear(nn.Module):
    """`nn.Linear` with its weights [out, in] in oneDNN's layout for DECODE_ROWS rows a call."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # Parameters, as nn.Linear's are: code that asks a module for its first parameter's dtype still finds it.
        weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), DECODE_ROWS)  # [out, in], opaque
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # [..., in] -> [N, in]
        out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")  # [N, out]
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def kernel_path(self) -> str:
        """What `quantize.kernel_paths` reports for this layer."""
        return f"{dtype_name(self.weight.dtype)}: oneDNN, laid out for {DECODE_ROWS} row{'s' * (DECODE_ROWS != 1)}"


@torch.no_grad()
def lay_out_linears(module: nn.Module) -> int:
    """Every float32 `nn.Linear` inside `module` on the CPU replaced by a `OneDnnLinear`; how many were replaced."""
    # By name, not module: a list of the layers would keep every float32 weight alive beside its copy until the end.
    names = [name for name, child in module.named_modules() if isinstance(child, nn.Linear)]
    replaced = 0
    for name in names:
        weight = module.get_submodule(name).weight
        if available(weight.device, weight.dtype):
            module.set_submodule(name, OneDnnLinear(module.get_submodule(name)))
            replaced += 1
    return replaced
