"""Weight-only int8 and int4 linear layers, their products by PyTorch's own CPU kernels.

Decoding one token reads every weight once, so on a CPU its speed is the memory bandwidth divided by the
bytes of weights: int8 halves them against bf16, int4 (with one scale and zero point per 32 weights) takes
5/16. `torch._weight_int4pack_mm_for_cpu` multiplies float activations by the packed weights without ever
writing a dequantized copy. On an x86 CPU, int8 layers quantize their activations too and multiply in integers
through FBGEMM (`DynamicInt8Linear`); elsewhere `torch._weight_int8pack_mm` takes float activations.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from xvlm_core.engines.pytorch.device import dtype_name
from xvlm_core.engines.pytorch.onednn import OneDnnLinear

# The CPU kernel reads its inner dimension in blocks of 16: other widths read past the row (wrong results,
# or a crash), so such layers stay exact.
_KERNEL_BLOCK = 16
# Up to this many rows (tokens) at once the kernel wins; a prompt of hundreds is compute-bound, and there a
# bf16 copy of the weights made for the call and the float kernels are twice as fast (331 rows, 2 cores).
_KERNEL_ROWS = 32
_QUANTIZE_ROWS = 1024
# A float32 model's float copy is float32, twice the bytes of a bf16 one, so the kernel wins up to more rows (AMD
# Zen 3, AVX2, one 5632x2048 layer at 128 rows: int8 kernel 51 ms, int4 57, against 61 and 90 for copy and product).
# Measured before the copy was cast rather than mixed-type multiplied; since then the copy and product cost about
# as much as the kernel from 64 rows (int8 46 ms against 39 at 64 rows, int4 47 against 54), so this bound may now
# be higher than it needs to be.
_FLOAT32_KERNEL_ROWS = 128
# Where those bf16 copies are made on the CPU, one buffer per thread reused by every layer: fresh tens of MB
# for each call paid their page faults every time (a 331-row prompt took 1.6 s instead of 1.15 s).
_scratch = threading.local()


def kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    """The activations' dtype in PyTorch's packed CPU kernels. They are vectorized for bfloat16 activations; with
    float32 ones they fall back to a path ten times slower (AMD Zen 3, AVX2, one 5632x2048 layer: int8 1.1 GB/s
    against 10.8, int4 0.4 against 5.4). So a float32 model's rows go through them in bfloat16, a rounding far
    below the weights' own."""
    return torch.bfloat16 if dtype == torch.float32 else dtype


def _scratch_buffer(slot: str, size: int, dtype: torch.dtype) -> torch.Tensor:
    """This thread's reusable CPU buffer `slot`, at least `size` elements of `dtype` (its first `size`)."""
    buffer = getattr(_scratch, slot, None)
    if buffer is None or buffer.dtype != dtype or buffer.numel() < size:
        # A normal tensor even when first asked for under inference mode: an inference tensor could not be
        # written by a later call made outside it.
        with torch.inference_mode(False):
            buffer = torch.empty(size, dtype=dtype)
        setattr(_scratch, slot, buffer)
    return buffer[:size]


class QuantizedLinear(nn.Module):
    """A linear layer whose weights are held in fewer bits; the loader builds it from the float weights."""

    in_features: int
    out_features: int
    kernel_rows: int  # up to this many rows (tokens) the packed kernel multiplies; more go through a float copy

    def rows_in_kernel(self, dtype: torch.dtype) -> int:
        """Up to how many rows of activations in `dtype` go through the packed kernel."""
        return max(self.kernel_rows, _FLOAT32_KERNEL_ROWS) if dtype == torch.float32 else self.kernel_rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # [..., in] -> [N, in]
        if rows.device.type == "cpu" and rows.shape[0] <= self.rows_in_kernel(rows.dtype):
            out = self._kernel(rows.contiguous())  # [N, out]
        else:
            # Prompts, and devices without these kernels (no compiler is used here): the memory is still saved.
            out = F.linear(rows, self._float_weight(rows.dtype))
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)

    def _kernel(self, rows: torch.Tensor) -> torch.Tensor:
        """PyTorch's CPU kernel for these weights: rows [N, in] -> [N, out]."""
        raise NotImplementedError

    def _float_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weights in `dtype` [out, in], for one call."""
        raise NotImplementedError

    @classmethod
    def fits(cls, linear: nn.Linear) -> bool:
        """Whether the kernel can take a layer of this shape (others stay exact)."""
        raise NotImplementedError

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> QuantizedLinear:
        """A float weight [out, in] (and bias) quantized, for activations in `dtype`."""
        raise NotImplementedError

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype | None = None) -> QuantizedLinear:
        """`linear` quantized, for activations in `dtype` (default: its weights' dtype)."""
        return cls.from_weight(linear.weight, linear.bias, dtype or linear.weight.dtype)

    def dequantized(self) -> torch.Tensor:
        """The weights as float32 [out, in]: what the quantized products stand for."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Linear(QuantizedLinear):
    """`nn.Linear` with int8 weights [out, in] and one float scale per output channel."""

    kernel_rows = _KERNEL_ROWS

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", weight)  # int8 [out, in]
        self.register_buffer("scales", scales)  # [out], the activations' dtype
        self.register_buffer("bias", bias)

    @classmethod
    def fits(cls, linear: nn.Linear) -> bool:
        return linear.in_features % _KERNEL_BLOCK == 0

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> Int8Linear:
        int8, scales = quantize_weight(weight.detach())
        return cls(int8, scales.to(dtype), _copied_bias(bias, dtype))

    def _kernel(self, rows: torch.Tensor) -> torch.Tensor:
        dtype = kernel_dtype(rows.dtype)
        if dtype == rows.dtype:
            return torch._weight_int8pack_mm(rows, self.weight, self.scales)
        # The float32 scales stay exact for prompts' float copies; their bfloat16 copy is one value a row.
        return torch._weight_int8pack_mm(rows.to(dtype), self.weight, self.scales.to(dtype)).to(rows.dtype)

    def _float_weight(self, dtype: torch.dtype) -> torch.Tensor:
        if self.weight.device.type != "cpu":
            # A GPU's caching allocator reuses memory by itself; and a buffer that could grow would break a
            # CUDA graph that captured it.
            return torch.mul(self.weight, self.scales[:, None])
        # Cast, then scaled in place: `torch.mul` of int8 by float takes a mixed-dtype path about six times slower
        # (AMD Zen 3, 2 cores, one 5632x2048 layer: 35 ms against 5.6).
        buffer = _scratch_buffer("float", self.weight.numel(), dtype).view(self.weight.shape)
        return buffer.copy_(self.weight).mul_(self.scales[:, None].to(dtype))

    def dequantized(self) -> torch.Tensor:
        return self.weight.float() * self.scales.float()[:, None]


def quantize_weight(
    weight: torch.Tensor, levels: int = 127, rotation: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float -> (int8 [out, in] in -levels..levels, float32 scales [out]), symmetric, per output channel;
    with `rotation`, of the weights `rotated` by it."""
    quantized = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    scales = torch.empty(weight.shape[0], dtype=torch.float32, device=weight.device)
    # A float32 copy of a block of rows at a time: converting lm_head whole would add ~0.4 GB to the peak.
    for start in range(0, weight.shape[0], _QUANTIZE_ROWS):
        rows = weight[start : start + _QUANTIZE_ROWS].to(torch.float32, copy=True)
        if rotation is not None:
            rows = rotated(rows, rotation)
        block_scales = rows.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / levels
        quantized[start : start + _QUANTIZE_ROWS] = rows.div_(block_scales[:, None]).round_().clamp_(-levels, levels)
        scales[start : start + _QUANTIZE_ROWS] = block_scales
    return quantized, scales


class DynamicInt8Linear(QuantizedLinear):
    """`nn.Linear` with int8 weights packed for FBGEMM, whose rows are quantized to 8 bits on each call (x86 CPU).

    Both factors are integers, so a decoded row reads a byte a weight and a prompt's rows multiply in 8-bit lanes,
    four to each float32 lane. On an AMD Zen 3 (AVX2, 2 cores), one 5632x2048 layer: 1 row 0.4 ms against 2.3
    for float32 `F.linear`, 331 rows 26-36 ms against 57-71.

    Two steps keep the rows' 8 bits where the values are. Each row is scaled to a peak of 1 before FBGEMM quantizes
    the call with one scale: every row gets its own steps (as llama.cpp's Q8_0 activations get a scale per
    block), and one loud row (a first token's) cannot flatten the others. And the inputs are rotated in blocks
    of ROTATION_BLOCK by a Hadamard matrix, the weights by the same at load, which leaves the product as it
    was but spreads a few loud channels over their block, so that they no longer set the whole row's step
    (on a random layer whose input had 8 channels 20 times louder: 2.1 % error instead of 7.0 %).
    Weights, scales and bias stay float32 and on the CPU whatever the model is cast to: `_apply` leaves them.
    The price is at load: FBGEMM packs a layer on one core, 70-90 ms for 5632x2048, and loading the 8-bit full
    model took 17 s instead of 6 (AMD Zen 3, 2 cores; a second worker packing beside the first gained nothing).
    """

    kernel_rows = 0  # every call goes through FBGEMM: nothing is copied to float

    def __init__(self, levels: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None, rotation: torch.Tensor):
        super().__init__()
        # Asked first: its trial runs are where FBGEMM says, once a process, that it is deprecated.
        if fbgemm_weight_levels() is None:
            raise RuntimeError("FBGEMM cannot run in this process: `quantized_linear` picks Int8Linear here")
        self.in_features, self.out_features = levels.shape[1], levels.shape[0]
        with _fbgemm_warnings_hidden():
            self.packed = torch.fbgemm_pack_quantized_matrix(levels.contiguous())  # opaque: FBGEMM's own blocks
        self.packed_bytes = levels.numel()
        # FBGEMM reads only the weights' shape from this argument: a view of one byte stands in for them.
        self.shape = torch.zeros((), dtype=torch.int8).expand(self.out_features, self.in_features)
        self.register_buffer("column_sums", _level_sums(levels))  # [out], its zero-point term
        self.register_buffer("scales", scales.float())  # [out]
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        self.no_bias = torch.zeros(self.out_features)
        self.rotation = rotation  # [block, block], orthogonal and symmetric

    @classmethod
    def fits(cls, linear: nn.Linear) -> bool:
        return Int8Linear.fits(linear)  # the same layers as on other processors, though FBGEMM takes any width

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> DynamicInt8Linear:
        levels = fbgemm_weight_levels()
        assert levels is not None, "quantized_linear picks Int8Linear where FBGEMM cannot run"
        rotation = hadamard(rotation_block(weight.shape[1]))
        int8, scales = quantize_weight(weight.detach(), levels, rotation)
        return cls(int8, scales, bias, rotation)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> DynamicInt8Linear:
        return self  # FBGEMM's packed weights live on the CPU, in float32 terms: a cast or a move would break them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = rotated(x.reshape(-1, self.in_features).float(), self.rotation)  # [..., in] -> [N, in] float32
        out = self._integer_product(rows)  # [N, out] float32
        if self.bias is not None:
            out.add_(self.bias)
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def _integer_product(self, rows: torch.Tensor) -> torch.Tensor:
        """Rotated rows [N, in] float32 times the rotated weights: [N, out], without the bias."""
        if rows.shape[0] == 1:
            # FBGEMM rounds a call's rows with the range of all of them, so a lone row (a decoded token's) already
            # has its own steps; each operation saved here is ~8 us of a ~60 us call (AMD Zen 3, 2 threads).
            return self._fbgemm(rows).mul_(self.scales)
        peaks = rows.abs().amax(dim=1, keepdim=True).clamp_(min=torch.finfo(torch.float32).tiny)  # [N, 1]
        out = self._fbgemm(rows / peaks)  # [N, out], in units of each row's peak and each output's scale
        return out.mul_(peaks).mul_(self.scales)

    def _fbgemm(self, rows: torch.Tensor) -> torch.Tensor:
        """rows [N, in] float32, quantized with one scale for the call, times the levels: [N, out] float32."""
        return torch.fbgemm_linear_int8_weight_fp32_activation(
            rows, self.shape, self.packed, self.column_sums, 1.0, 0, self.no_bias
        )

    def dequantized(self) -> torch.Tensor:
        # Read back through the kernel, by rows of the identity, which quantize exactly (to levels 0 and 255);
        # then rotated back (the rotation is its own inverse).
        rotated_weights = self._integer_product(torch.eye(self.in_features)).T.contiguous()  # [out, in]
        return rotated(rotated_weights, self.rotation)


def _level_sums(levels: torch.Tensor) -> torch.Tensor:
    """Each output's sum of levels, int32 [out]. Summed as float32 copies of blocks of rows, which is exact (at most
    127 * in, far below 2**24) and several times faster than PyTorch's int8 reduction (one 5632x2048 layer: 33 ms)."""
    blocks = (torch.empty(block.shape).copy_(block).sum(dim=1) for block in levels.split(_QUANTIZE_ROWS))
    return torch.cat(list(blocks)).to(torch.int32)


# Inputs are rotated in blocks of this many channels: 64 spreads a loud channel about as well as 128 or 256 did on
# random layers (2.1 % against 2.0 %) at half the arithmetic of 128 (a 331-row prompt: ~0.2 s in all).
ROTATION_BLOCK = 64


def rotation_block(width: int) -> int:
    """The largest power of two up to ROTATION_BLOCK that divides `width` (1: no rotation)."""
    block = ROTATION_BLOCK
    while width % block:
        block //= 2
    return block


@functools.cache
def hadamard(size: int) -> torch.Tensor:
    """The Sylvester Hadamard matrix of `size` (a power of two), scaled to be orthogonal: float32 [size, size]."""
    matrix = torch.ones(1, 1)
    while matrix.shape[0] < size:
        matrix = torch.cat([torch.cat([matrix, matrix], dim=1), torch.cat([matrix, -matrix], dim=1)])
    return matrix / size**0.5


def rotated(rows: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """rows [N, in] float32, each block of `rotation`'s size along `in` multiplied by it: [N, in]."""
    size = rotation.shape[0]
    if size == 1:
        return rows
    return torch.mm(rows.reshape(-1, size), rotation).view(rows.shape)  # 2-D: a decoded row's call takes 15 us, not 25


@functools.cache
def fbgemm_weight_levels() -> int | None:
    """The largest weight level FBGEMM's products keep exact on this processor; None where it cannot run.

    127, unless its kernels add pairs of 8-bit products in 16 bits (x86 without VNNI: `vpmaddubsw` saturates
    at 32767, which 255 * 127 * 2 passes): then 63, and the weights have 7 bits. Found by trying: rows at the
    top of the activations' range against weights at the top of theirs.
    """
    if not hasattr(torch, "fbgemm_pack_quantized_matrix"):  # a PyTorch from after its removal
        return None
    width = 256
    rows = torch.ones(2, width)
    rows[1] = -1  # quantized to 255 and 0
    noise = torch.randn(3, width, generator=torch.Generator().manual_seed(0))
    rows = torch.cat([rows, noise / noise.abs().amax(dim=1, keepdim=True)])
    for levels in (127, 63):
        weight = torch.full((16, width), levels, dtype=torch.int8)
        weight[8:] = torch.randint(-levels, levels + 1, (8, width), generator=torch.Generator().manual_seed(1))
        try:
            with _fbgemm_warnings_hidden():
                packed = torch.fbgemm_pack_quantized_matrix(weight)
                got = torch.fbgemm_linear_int8_weight_fp32_activation(
                    rows, weight, packed, _level_sums(weight), 1.0, 0, torch.zeros(16)
                )
        except RuntimeError:  # built without FBGEMM, or a processor it does not support
            return None
        expected = rows @ weight.float().T
        # Each 8-bit value is within 1/255 of the rows' range, so a sum within width * levels / 255; a saturated
        # sum of the first row is off by about half of width * levels.
        if (got - expected).abs().max() <= 2 * width * levels / 255:
            return levels
    return None


@contextmanager
def _fbgemm_warnings_hidden() -> Iterator[None]:
    """FBGEMM's int8 functions are deprecated in PyTorch and say so once a process: the locked version has them,
    `fbgemm_weight_levels` notices when one lacks them, and the warning is no news to a person."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="fbgemm_.* is deprecated", category=UserWarning)
        yield


# int4: 32 weights along the input share one scale and one zero point (both in the kernel's activations' dtype), as
# PyTorch's CPU kernel takes them: weight = (q - 8) * scale + zero, q in 0..15. Groups of 32 keep a random
# layer's product within ~8 % of the exact one; 64 would take 4.5 bits a weight instead of 5 but ~10 %.
INT4_GROUP = 32
# The kernel packs blocks of up to 64 output rows (its layout depends on the CPU's vector width); layers whose
# rows do not fill whole blocks stay exact.
_INT4_ROWS_BLOCK = 64
# The kernel's time grows with each row while a dequantized bf16 copy costs the same for any number: on
# 2 cores, one 5632x2048 layer took ~0.3 ms a row in the kernel against ~15 ms for the copy plus its
# product, so up to this many rows (a decoded token, a short follow-up) the kernel wins.
_INT4_KERNEL_ROWS = 64


class Int4Linear(QuantizedLinear):
    """`nn.Linear` with 4-bit weights packed for `torch._weight_int4pack_mm_for_cpu`, grouped scales and zeros."""

    kernel_rows = _INT4_KERNEL_ROWS

    def __init__(
        self, packed: torch.Tensor, scales_and_zeros: torch.Tensor, bias: torch.Tensor | None, in_features: int
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, packed.shape[0]
        self.register_buffer("weight", packed)  # uint8 [out, in / 2], the kernel's own layout
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # [in / group, out, 2], the kernel's dtype
        self.register_buffer("bias", bias)

    @classmethod
    def fits(cls, linear: nn.Linear) -> bool:
        shape_fits = linear.in_features % INT4_GROUP == 0 and linear.out_features % _INT4_ROWS_BLOCK == 0
        # A layout this code cannot read back would leave prompts no dequantized path: keep such layers exact.
        return shape_fits and _packed_block() is not None

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> Int4Linear:
        packed, scales_and_zeros = quantize_weight_int4(weight.detach())
        return cls(packed, scales_and_zeros.to(kernel_dtype(dtype)), _copied_bias(bias, dtype), weight.shape[1])

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Int4Linear:
        # A model's .to(float32) casts every float buffer: the scales go back to the kernel's dtype (exactly:
        # they were made in it), or each call would take the kernel's slow path or convert them.
        module = super()._apply(fn, recurse)
        self.scales_and_zeros = self.scales_and_zeros.to(kernel_dtype(self.scales_and_zeros.dtype))
        return module

    def _kernel(self, rows: torch.Tensor) -> torch.Tensor:
        scales_and_zeros = self.scales_and_zeros
        out = torch._weight_int4pack_mm_for_cpu(rows.to(scales_and_zeros.dtype), self.weight, INT4_GROUP,
                                                scales_and_zeros)
        return out.to(rows.dtype)

    def _float_weight(self, dtype: torch.dtype) -> torch.Tensor:
        # On the CPU in this thread's reused buffers.
        out_features, in_features = self.out_features, self.in_features
        on_cpu = self.weight.device.type == "cpu"
        size = out_features * in_features
        nibbles = _scratch_buffer("nibbles", size, torch.uint8) if on_cpu else self.weight.new_empty(size)
        unpack_int4(self.weight, nibbles.view(out_features, in_features))
        scale, zero = self.scales_and_zeros.to(dtype).unbind(-1)  # [in / group, out] each
        low = zero - 8 * scale  # the weight of level 0
        grouped = (out_features, in_features // INT4_GROUP, INT4_GROUP)
        buffer = _scratch_buffer("float", size, dtype) if on_cpu else scale.new_empty(size)
        # [out, in / group, group] = q * scale + low, each group's pair broadcast over its 32 weights. The levels are
        # cast first: arithmetic mixing uint8 and float takes a path about three times slower (one 5632x2048 layer
        # on 2 cores: 51 ms against 16).
        levels = buffer.view(grouped).copy_(nibbles.view(grouped))
        levels.mul_(scale.T[..., None]).add_(low.T[..., None])
        return buffer.view(out_features, in_features)

    def dequantized(self) -> torch.Tensor:
        nibbles = torch.empty(self.out_features, self.in_features, dtype=torch.uint8, device=self.weight.device)
        unpack_int4(self.weight, nibbles)
        scale, zero = self.scales_and_zeros.float().unbind(-1)  # [in / group, out] each
        grouped = nibbles.view(self.out_features, -1, INT4_GROUP).float() - 8
        return (grouped * scale.T[..., None] + zero.T[..., None]).view(self.out_features, self.in_features)


def quantize_weight_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float -> (packed uint8 [out, in / 2], float32 scales and zeros [in / group, out, 2]).

    Each group's range [min, max] is cut into 15 steps (asymmetric: no level is wasted on a sign).
    """
    out_features, in_features = weight.shape
    packed = torch.empty(out_features, in_features // 2, dtype=torch.uint8)
    scales = torch.empty(out_features, in_features // INT4_GROUP)
    lows = torch.empty_like(scales)
    # Blocks of rows, each a whole number of the kernel's blocks, so packing them one by one gives the same
    # bytes as packing the whole and the float32 and int32 temporaries stay small.
    for start in range(0, out_features, _QUANTIZE_ROWS):
        end = min(start + _QUANTIZE_ROWS, out_features)
        rows = weight[start:end].to("cpu", torch.float32, copy=True).view(end - start, -1, INT4_GROUP)
        low, high = rows.amin(dim=-1), rows.amax(dim=-1)
        scale = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
        levels = rows.sub_(low[..., None]).div_(scale[..., None]).round_().clamp_(0, 15).to(torch.int32)
        packed[start:end] = torch._convert_weight_to_int4pack_for_cpu(levels.view(end - start, in_features), 1)
        scales[start:end], lows[start:end] = scale, low
    zeros = lows + 8 * scales  # the kernel subtracts 8 from each level
    return packed, torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous()


def unpack_int4(packed: torch.Tensor, out: torch.Tensor) -> None:
    """The levels (0..15) of the kernel's packed weights [out, in / 2] into `out` (uint8 [out, in]).

    In blocks of B output rows (B from `_packed_block`), byte (k, j) of a block holds row j's weight k in its
    low half and row j + B/2's in its high half.
    """
    block = _packed_block()
    assert block is not None, "Int4Linear.fits keeps layers exact where the layout is unknown"
    out_features, in_features = out.shape
    source = packed.view(out_features // block, in_features, block // 2)  # [blocks, in, B/2]
    target = out.view(out_features // block, 2, block // 2, in_features).transpose(2, 3)  # [blocks, 2, in, B/2]
    torch.bitwise_and(source, 15, out=target[:, 0])
    torch.bitwise_right_shift(source, 4, out=target[:, 1])


@functools.cache
def _packed_block() -> int | None:
    """Rows per block in this machine's int4 layout, found by packing known levels; None if none matches."""
    levels = torch.randint(0, 16, (2 * _INT4_ROWS_BLOCK, 64), generator=torch.Generator().manual_seed(0))
    packed = torch._convert_weight_to_int4pack_for_cpu(levels.to(torch.int32), 1)
    for block in (64, 32, 16):
        source = packed.view(-1, levels.shape[1], block // 2)
        unpacked = torch.stack([source & 15, source >> 4], dim=1).transpose(2, 3)  # [blocks, 2, B/2, in]
        if torch.equal(unpacked.reshape(levels.shape), levels.to(torch.uint8)):
            return block
    return None


def _copied_bias(bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    # Copied: a view would keep the whole checkpoint mapping it came from alive.
    return None if bias is None else bias.detach().to(dtype, copy=True)


def quantized_linear(name: str, kind: str, device: torch.device) -> type[QuantizedLinear]:
    """The class that holds layer `name` in precision `kind` on `device`.

    With 4-bit weights the output layer keeps 8 bits (as llama.cpp's Q4_K_M keeps 6): on the tiny
    checkpoint, whose next-token distributions are sharp, a 4-bit lm_head alone moved them as far as all
    the other 4-bit layers together, and 8 bits there cost ~3 % more bytes a token on the full model.
    """
    if kind == "int4" and name != "lm_head":
        return Int4Linear
    return DynamicInt8Linear if device.type == "cpu" and fbgemm_weight_levels() is not None else Int8Linear


def quantizable_linears(module: nn.Module, kind: str, device: torch.device) -> dict[str, nn.Linear]:
    """Every `nn.Linear` inside `module` the kernel of precision `kind` on `device` can take, by qualified name."""
    linears = (item for item in module.named_modules() if isinstance(item[1], nn.Linear))
    return {name: child for name, child in linears if quantized_linear(name, kind, device).fits(child)}


def kernel_paths(module: nn.Module) -> str:
    """Which product each linear layer inside `module` runs, with how many layers run it."""
    layers = (layer for layer in module.modules() if isinstance(layer, (nn.Linear, QuantizedLinear, OneDnnLinear)))
    paths = Counter(_kernel_path(layer) for layer in layers)
    return "; ".join(f"{path} x{count}" for path, count in paths.items())


def _kernel_path(layer: nn.Module) -> str:
    if isinstance(layer, OneDnnLinear):
        return layer.kernel_path()
    if isinstance(layer, DynamicInt8Linear):
        return f"int8 weights (±{fbgemm_weight_levels()}) × int8 rows: FBGEMM"
    on_cpu = layer.weight.device.type == "cpu"
    if isinstance(layer, Int4Linear):
        if not on_cpu:
            return f"int4 group {INT4_GROUP}: a dequantized copy and F.linear"
        return f"int4: _weight_int4pack_mm_for_cpu, group {INT4_GROUP} ({_copy_above(layer)})"
    if isinstance(layer, Int8Linear):
        if not on_cpu:
            return "int8: a dequantized copy and F.linear"
        return f"int8: _weight_int8pack_mm ({_copy_above(layer)})"
    return f"{dtype_name(layer.weight.dtype)}: F.linear"


def _copy_above(layer: QuantizedLinear) -> str:
    return f"above {layer.kernel_rows} rows, {layer.rows_in_kernel(torch.float32)} in float32, a float copy"


def weight_bytes(module: nn.Module) -> int:
    """Bytes of weights `module` reads in one forward: int8 weights count one byte each."""
    tensors = [*module.parameters(), *module.buffers()]
    packed = sum(layer.packed_bytes for layer in module.modules() if isinstance(layer, DynamicInt8Linear))
    return packed + sum(tensor.numel() * tensor.element_size() for tensor in tensors)
