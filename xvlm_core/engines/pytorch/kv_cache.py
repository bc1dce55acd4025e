"""A KV cache allocated once for the whole context: tokens are written in place, never concatenated.

It is a transformers `Cache`, so the prefill runs through `LlamaForCausalLM` unchanged (the mask is sized
to what is filled, as with the dynamic cache); the decode step in `decode_step.py` reads the same buffers.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig
from transformers.cache_utils import Cache, CacheLayerMixin


class PreallocatedLayer(CacheLayerMixin):
    """One layer's keys and values, [1, kv_heads, capacity, head_dim] each; the first `length` are valid."""

    is_sliding = False
    is_croppable = True

    def __init__(self, capacity: int, zeroed: bool):
        super().__init__()
        self.capacity = capacity
        self.zeroed = zeroed
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        shape = (*key_states.shape[:2], self.capacity, key_states.shape[-1])  # [1, kv_heads, capacity, head_dim]
        # Unwritten positions are only read by the fixed-shape (graph) step, masked out; elsewhere `empty`
        # leaves the pages untouched, so an unused context costs no memory.
        allocate = torch.zeros if self.zeroed else torch.empty
        self.keys = allocate(shape, dtype=key_states.dtype, device=key_states.device)
        self.values = allocate(shape, dtype=value_states.dtype, device=value_states.device)
        self.device = key_states.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write [1, kv_heads, n, head_dim] after what is cached; return views of everything cached."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"the KV cache holds {self.capacity} positions; {end} were asked for")
        self.keys[:, :, self.length : end].copy_(key_states)
        self.values[:, :, self.length : end].copy_(value_states)
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def crop(self, tokens_to_remove: int) -> None:
        """Forget the last `-tokens_to_remove` positions (a negative count, as transformers' layers take)."""
        self.length = max(0, self.length - abs(tokens_to_remove))

    def reset(self) -> None:
        self.length = 0


class PreallocatedCache(Cache):
    """Every layer's `PreallocatedLayer`, sized to the model's context."""

    def __init__(self, config: LlamaConfig, zeroed: bool = False):
        capacity = config.max_position_embeddings
        super().__init__(layers=[PreallocatedLayer(capacity, zeroed) for _ in range(config.num_hidden_layers)])

    @property
    def length(self) -> int:
        return self.layers[0].length

    def advance(self, positions: int) -> None:
        """Count `positions` written into every layer's buffers by a step that wrote them itself."""
        for layer in self.layers:
            layer.length += positions
