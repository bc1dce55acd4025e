"""Weight-only int8: each output channel of a linear layer scaled into [-127, 127], products by PyTorch's kernel.

Decoding one token reads every weight once, so on a CPU its speed is the memory bandwidth divided by the
bytes of weights: int8 halves them against bf16. `torch._weight_int8pack_mm` multiplies float activations
by the int8 weights and applies the scales without ever writing a dequantized copy.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

QUANTIZE_CHOICES = ("none", "int8")

# The CPU kernel reads its inner dimension in blocks of 16: other widths read past the row (wrong results,
# or a crash), so such layers stay exact.
_KERNEL_BLOCK = 16
# Up to this many rows (tokens) at once the kernel wins; a prompt of hundreds is compute-bound, and there a
# bf16 copy of the weights made for the call and the float kernels are twice as fast (331 rows, 2 cores).
_KERNEL_ROWS = 32
_QUANTIZE_ROWS = 1024
# Where those bf16 copies are made on the CPU, one buffer per thread reused by every layer: fresh tens of MB
# for each call paid their page faults every time (a 331-row prompt took 1.6 s instead of 1.15 s).
_scratch = threading.local()


class Int8Linear(nn.Module):
    """`nn.Linear` with int8 weights [out, in] and one float scale per output channel."""

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", weight)  # int8 [out, in]
        self.register_buffer("scales", scales)  # [out], the activations' dtype
        self.register_buffer("bias", bias)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> Int8Linear:
        """A float weight [out, in] (and bias) quantized, for activations in `dtype`."""
        int8, scales = quantize_weight(weight.detach())
        # The bias is copied: a view would keep the whole checkpoint mapping it came from alive.
        return cls(int8, scales.to(dtype), None if bias is None else bias.detach().to(dtype, copy=True))

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype | None = None) -> Int8Linear:
        """`linear` quantized, for activations in `dtype` (default: its weights' dtype)."""
        return cls.from_weight(linear.weight, linear.bias, dtype or linear.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # [..., in] -> [N, in]
        if rows.device.type == "cpu" and rows.shape[0] <= _KERNEL_ROWS:
            out = torch._weight_int8pack_mm(rows.contiguous(), self.weight, self.scales)  # [N, out]
        else:
            # Prompts, and devices without this kernel (no compiler is used here): the memory is still halved.
            out = F.linear(rows, self._float_weight(rows.dtype))
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)

    def _float_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weights in `dtype` [out, in], for one call."""
        if self.weight.device.type != "cpu":
            # A GPU's caching allocator reuses memory by itself; and a buffer that could grow would break a
            # CUDA graph that captured it.
            return torch.mul(self.weight, self.scales[:, None])
        size = self.weight.numel()
        buffer = getattr(_scratch, "buffer", None)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < size:
            buffer = _scratch.buffer = torch.empty(size, dtype=dtype)
        return torch.mul(self.weight, self.scales[:, None], out=buffer[:size].view(self.weight.shape))

    def dequantized(self) -> torch.Tensor:
        """The weights as float32 [out, in]: what the int8 products stand for."""
        return self.weight.float() * self.scales.float()[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float -> (int8 [out, in], float32 scales [out]), symmetric, per output channel."""
    quantized = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    scales = torch.empty(weight.shape[0], dtype=torch.float32, device=weight.device)
    # A float32 copy of a block of rows at a time: converting lm_head whole would add ~0.4 GB to the peak.
    for start in range(0, weight.shape[0], _QUANTIZE_ROWS):
        rows = weight[start : start + _QUANTIZE_ROWS].to(torch.float32, copy=True)
        block_scales = rows.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
        quantized[start : start + _QUANTIZE_ROWS] = rows.div_(block_scales[:, None]).round_().clamp_(-127, 127)
        scales[start : start + _QUANTIZE_ROWS] = block_scales
    return quantized, scales


def can_quantize(linear: nn.Linear) -> bool:
    return linear.in_features % _KERNEL_BLOCK == 0


def quantizable_linears(module: nn.Module) -> dict[str, nn.Linear]:
    """Every `nn.Linear` inside `module` the int8 kernel can take, by qualified name."""
    modules = module.named_modules()
    return {name: child for name, child in modules if isinstance(child, nn.Linear) and can_quantize(child)}



def weight_bytes(module: nn.Module) -> int:
    """Bytes of weights `module` reads in one forward: int8 weights count one byte each."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)
