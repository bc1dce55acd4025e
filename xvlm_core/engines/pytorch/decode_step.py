"""One decode step: a token through the language model's own modules, with no per-token work but the math.

transformers' forward rebuilds masks, position ids and output objects and re-checks its options in every
layer for every token; on a CPU that is a fifth of a step. Here a step is the layers' products, the rotary
embedding computed once, and attention over the cache's filled part. Three ways to run it:

- `LeanStep` (CPU, Apple GPU): attends over views of what is cached; shapes grow by one each token.
- `FixedShapeStep`: the same math with shapes that never change (attention over the whole buffer, masked
  past the current position), the precondition for replaying it as a CUDA graph.
- `GraphedStep` (NVIDIA GPU): `FixedShapeStep` captured once as a CUDA graph and replayed per token; if
  capturing fails it logs one line and runs `LeanStep` instead. No compiler is needed either way.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaAttention, apply_rotary_pos_emb

from xvlm_core.engines.pytorch.kv_cache import PreallocatedCache, PreallocatedLayer

log = logging.getLogger(__name__)

DECODE_MODES = ("auto", "lean", "fixed", "graph")


class LeanStep:
    """Feeds one token through `LlamaForCausalLM`'s modules, reading and extending a `PreallocatedCache`."""

    def __init__(self, language_model: LlamaForCausalLM):
        inner, config = language_model.model, language_model.config
        self.embed, self.layers, self.norm = inner.embed_tokens, list(inner.layers), inner.norm
        self.rotary, self.lm_head = inner.rotary_emb, language_model.lm_head
        self.kv_heads = config.num_key_value_heads
        self.groups = config.num_attention_heads // config.num_key_value_heads
        self.head_dim = self.layers[0].self_attn.head_dim

    @torch.inference_mode()
    def __call__(self, token: int, cache: PreallocatedCache) -> torch.Tensor:
        """The next token's logits [1, vocab] float32 after `token`, which is cached at the next position."""
        device = self.embed.weight.device
        x = self.embed(torch.tensor([[token]], device=device))  # [1, 1, hidden]
        cos, sin = self.rotary(x, torch.tensor([[cache.length]], device=device))  # [1, 1, head_dim]
        for layer, kv in zip(self.layers, cache.layers, strict=True):
            x = x + self._attend(layer.self_attn, layer.input_layernorm(x), cos, sin, kv)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.lm_head(self.norm(x))[:, -1].float()

    def _qkv(
        self, attention: LlamaAttention, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        # The query heads that share a KV head become that head's queries: one attention call over the
        # cache as it is, without repeating the keys for every query head.
        q = attention.q_proj(h).view(1, self.kv_heads, self.groups, self.head_dim)  # [1, kv, groups, d]
        k = attention.k_proj(h).view(1, 1, self.kv_heads, self.head_dim).transpose(1, 2)  # [1, kv, 1, d]
        v = attention.v_proj(h).view(1, 1, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return q, k, v

    def _attend(
        self, attention: LlamaAttention, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv: PreallocatedLayer
    ) -> torch.Tensor:
        q, k, v = self._qkv(attention, h, cos, sin)
        keys, values = kv.update(k, v)  # [1, kv, n, d]
        out = F.scaled_dot_product_attention(q, keys, values, scale=attention.scaling)  # [1, kv, groups, d]
        return attention.o_proj(out.reshape(1, 1, -1))


class FixedShapeStep(LeanStep):
    """`LeanStep` with the token and position as tensors and every shape fixed, so it can be replayed."""

    @torch.inference_mode()
    def __call__(self, token: int, cache: PreallocatedCache) -> torch.Tensor:
        device = self.embed.weight.device
        logits = self.run(torch.tensor([[token]], device=device), torch.tensor([cache.length], device=device), cache)
        cache.advance(1)
        return logits.clone()

    def run(self, token: torch.Tensor, position: torch.Tensor, cache: PreallocatedCache) -> torch.Tensor:
        """token [1, 1], position [1] on the model's device; writes the cache but leaves its length alone."""
        x = self.embed(token)  # [1, 1, hidden]
        cos, sin = self.rotary(x, position.view(1, 1))
        visible = (torch.arange(cache.layers[0].capacity, device=position.device) <= position).view(1, 1, 1, -1)
        for layer, kv in zip(self.layers, cache.layers, strict=True):
            h = layer.input_layernorm(x)
            q, k, v = self._qkv(layer.self_attn, h, cos, sin)
            kv.keys.index_copy_(2, position, k)
            kv.values.index_copy_(2, position, v)
            out = F.scaled_dot_product_attention(
                q, kv.keys, kv.values, attn_mask=visible, scale=layer.self_attn.scaling
            )  # [1, kv, groups, d]
            x = x + layer.self_attn.o_proj(out.reshape(1, 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.lm_head(self.norm(x))[:, -1].float()


class GraphedStep:
    """`FixedShapeStep` captured as a CUDA graph on its first call, for one cache; `LeanStep` if that fails."""

    def __init__(self, language_model: LlamaForCausalLM):
        self.fixed = FixedShapeStep(language_model)
        self.lean = LeanStep(language_model)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.captured_for: PreallocatedCache | None = None
        self.failed = False

    @torch.inference_mode()
    def __call__(self, token: int, cache: PreallocatedCache) -> torch.Tensor:
        if not self.failed and self.captured_for is not cache:
            try:
                self._capture(cache)
            except Exception as exc:  # any failure only costs speed: the eager step gives the same answer
                self.failed = True
                log.warning("decoding without a CUDA graph (%s: %s)", type(exc).__name__, exc)
        if self.failed:
            return self.lean(token, cache)
        assert self.graph is not None
        self.token.fill_(token)
        self.position.fill_(cache.length)
        self.graph.replay()
        cache.advance(1)
        return self.logits.clone()

    def _capture(self, cache: PreallocatedCache) -> None:
        device = self.fixed.embed.weight.device
        if device.type != "cuda":
            raise RuntimeError(f"CUDA graphs need an NVIDIA GPU, and the model is on {device}")
        self.token = torch.zeros((1, 1), dtype=torch.long, device=device)
        self.position = torch.full((1,), cache.length, dtype=torch.long, device=device)
        # Warm up on a side stream (kernels pick their algorithms), as capturing requires; what the warm-up
        # writes at the next position is overwritten by the real step.
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.fixed.run(self.token, self.position, cache)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self.fixed.run(self.token, self.position, cache)
        self.graph, self.captured_for = graph, cache


def make_step(language_model: LlamaForCausalLM, mode: str = "auto") -> LeanStep | GraphedStep:
    """The decode step for `mode` (`DECODE_MODES`); "auto" replays a CUDA graph on NVIDIA GPUs."""
    if mode not in DECODE_MODES:
        raise ValueError(f"decode mode must be one of {', '.join(DECODE_MODES)}, not {mode!r}")
    if mode == "auto":
        mode = "graph" if language_model.get_input_embeddings().weight.device.type == "cuda" else "lean"
    return {"lean": LeanStep, "fixed": FixedShapeStep, "graph": GraphedStep}[mode](language_model)


def needs_zeroed_cache(step: LeanStep | GraphedStep) -> bool:
    """Whether the step reads unwritten cache positions (masked, but NaN garbage would still spread)."""
    return isinstance(step, FixedShapeStep | GraphedStep)
