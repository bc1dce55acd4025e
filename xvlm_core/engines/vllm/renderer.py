"""Renderer for tokenizer mode `xvlm`: OpenAI messages straight to the ids of xvlm_core's v1 prompt.

The prompt is rendered to ids, not to text that is tokenized again, so `<image>` typed in a message stays
characters (as in `xvlm`) and only attached images get a placeholder.
"""

from __future__ import annotations

from typing import Any

from vllm.renderers.base import BaseRenderer
from vllm.renderers.chat_utils import parse_chat_messages, parse_chat_messages_async
from vllm.renderers.inputs.preprocess import parse_dec_only_prompt
from vllm.utils.async_utils import make_async

from xvlm_core.engines.vllm.tokenizer import XvlmTokenizer


class XvlmRenderer(BaseRenderer[XvlmTokenizer]):
    def __init__(self, config: Any, tokenizer: XvlmTokenizer | None) -> None:
        super().__init__(config, tokenizer)
        self._render_async = make_async(self._render, executor=self._executor)

    def _render(self, conversation: list[Any]) -> list[int]:
        return self.get_tokenizer().apply_chat_template(conversation, tokenize=True)

    def _prompt(self, ids: list[int], mm_data: Any, mm_uuids: Any) -> dict:
        prompt = parse_dec_only_prompt(ids)
        if mm_data is not None:
            prompt["multi_modal_data"] = mm_data
        if mm_uuids is not None:
            prompt["multi_modal_uuids"] = mm_uuids
        return prompt

    def render_messages(self, messages: list[Any], params: Any) -> tuple[list[Any], dict]:
        # "openai" keeps each message's parts, so the renderer sees which message holds which images.
        conversation, mm_data, mm_uuids = parse_chat_messages(
            messages, self.model_config, content_format="openai",
            media_io_kwargs=params.media_io_kwargs, mm_processor_kwargs=params.mm_processor_kwargs,
        )
        return conversation, self._prompt(self._render(conversation), mm_data, mm_uuids)

    async def render_messages_async(self, messages: list[Any], params: Any) -> tuple[list[Any], dict]:
        conversation, mm_data, mm_uuids = await parse_chat_messages_async(
            messages, self.model_config, content_format="openai",
            media_io_kwargs=params.media_io_kwargs, mm_processor_kwargs=params.mm_processor_kwargs,
        )
        return conversation, self._prompt(await self._render_async(conversation), mm_data, mm_uuids)
