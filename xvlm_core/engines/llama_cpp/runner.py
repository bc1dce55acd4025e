"""llama.cpp running the language model: a GGUF file loaded once, and a context (KV cache) per chat session.

Positions go in as token ids or as embeddings (an image's, from our own tower and projector); one batch
holds only one kind, so the session's runs are fed one by one, each in chunks.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from xvlm_core.engines.language import BeforeChunk, Run
from xvlm_core.engines.pytorch.device import cpu_flags
from xvlm_core.errors import EngineUnavailable, XvlmError

log = logging.getLogger(__name__)
# Positions per llama_decode call: Stop is checked between calls, as the PyTorch engine does between chunks.
CHUNK = 256
GGML_TYPE_F32 = 0  # ggml.h
FLASH_ATTENTION_OFF = 0  # llama.h: LLAMA_FLASH_ATTN_TYPE_DISABLED
_llama_log_callback = None  # kept alive while llama.cpp may call it


def llama_cpp_module():
    """llama-cpp-python, or an error that says how to install it; its log goes to ours (debug)."""
    global _llama_log_callback
    try:
        import llama_cpp
    except ImportError:
        raise EngineUnavailable(
            "The llama.cpp engine is not installed: install the project with its 'llamacpp' extra "
            "(pip install 'xvlm-chat[llamacpp]'), or use the PyTorch engine."
        ) from None
    except (OSError, RuntimeError) as exc:  # llama-cpp-python is there, but its compiled library cannot be loaded
        raise EngineUnavailable(f"The llama.cpp engine cannot start: {exc}") from None
    if _llama_log_callback is None:  # once a process: it was checked, then started
        missing = instructions_missing(Path(llama_cpp.__file__).parent / "lib")
        if missing:
            raise EngineUnavailable(
                f"This llama.cpp was compiled for a processor with {', '.join(missing)}, which this one lacks; "
                "reinstall llama-cpp-python on this machine to compile it for this processor, or use the PyTorch "
                "engine."
            )

        @llama_cpp.llama_log_callback
        def to_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            log.debug("%s", text.decode("utf-8", "replace").rstrip())

        _llama_log_callback = to_log
        llama_cpp.llama_log_set(to_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp


# ggml's instruction sets, as its CPU library was compiled (ggml_cpu_has_<name>), by the flag Linux reports for each.
COMPILED_FOR = {"sse3": "pni", "ssse3": "ssse3", "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
                "bmi2": "bmi2", "avx_vnni": "avx_vnni", "avx512": "avx512f", "avx512_vbmi": "avx512vbmi",
                "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16", "amx_int8": "amx_int8"}


def instructions_missing(library_folder: Path, flags: set[str] | None = None) -> list[str]:
    """The instruction sets ggml was compiled to use that this processor lacks (a build made for another machine,
    as a bundle is): llama.cpp would stop the whole process with an illegal instruction at its first product, so
    this is asked before anything runs. Only what its constant-returning `ggml_cpu_has_*` say is called; [] where
    the processor's sets cannot be read (not Linux) or the library is not where llama-cpp-python keeps it."""
    flags = cpu_flags() if flags is None else flags
    library = next(iter(sorted(library_folder.glob("libggml-cpu.so*"))), None)
    if flags is None or library is None:
        return []
    ggml_cpu = ctypes.CDLL(str(library))  # already loaded by llama_cpp: the same handle
    compiled = [name for name in COMPILED_FOR if getattr(ggml_cpu, f"ggml_cpu_has_{name}", lambda: 0)()]
    return [COMPILED_FOR[name] for name in compiled if COMPILED_FOR[name] not in flags]


class LlamaModel:
    """A GGUF language model read into memory by llama.cpp, shared by every session on it."""

    def __init__(self, path: Path, float32_cache: bool = False):
        self.lib = llama_cpp_module()
        self.float32_cache = float32_cache
        params = self.lib.llama_model_default_params()
        params.n_gpu_layers = 0
        # Read, not memory-mapped: llama.cpp repacks most 4- and 8-bit weights into a layout of its own, and a
        # mapped file keeps the pages it repacked from resident beside the copy (4-bit: about 1.6 GB peak, not 2.1).
        params.load_mode = self.lib.LLAMA_LOAD_MODE_NONE
        self.handle = self.lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.handle:
            raise XvlmError(f"llama.cpp could not load {path}; delete it to have it converted again.")
        self.hidden = self.lib.llama_model_n_embd(self.handle)
        self.vocab = self.lib.llama_vocab_n_tokens(self.lib.llama_model_get_vocab(self.handle))

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self.lib.llama_model_free(self.handle)
            self.handle = None


class LlamaLanguageModel:
    """One llama.cpp context on a `LlamaModel`: the session's KV cache, for `engines.language.LanguageModel`."""

    def __init__(self, model: LlamaModel, context_length: int):
        self.model, lib = model, model.lib
        self.lib = lib
        params = lib.llama_context_default_params()
        params.n_ctx = context_length
        params.n_batch = params.n_ubatch = CHUNK
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = torch.get_num_threads()
        params.no_perf = True
        if model.float32_cache:
            # float32 keys and values, attention without flash attention's float16 steps: within float32's
            # rounding of PyTorch's float32 answers, where llama.cpp's defaults differ in the third digit.
            params.type_k = params.type_v = GGML_TYPE_F32
            params.flash_attn_type = FLASH_ATTENTION_OFF
        self.context = lib.llama_init_from_model(model.handle, params)
        if not self.context:
            raise XvlmError(f"llama.cpp could not make a context of {context_length} positions.")
        self.memory = lib.llama_get_memory(self.context)
        self.token_batch = lib.llama_batch_init(CHUNK, 0, 1)
        self.embedding_batch = lib.llama_batch_init(CHUNK, model.hidden, 1)
        self._length = 0

    def __del__(self) -> None:
        lib = self.lib
        if getattr(self, "context", None):
            lib.llama_batch_free(self.token_batch)
            lib.llama_batch_free(self.embedding_batch)
            lib.llama_free(self.context)
            self.context = None

    @property
    def length(self) -> int:
        return self._length

    def crop(self, length: int) -> None:
        self.lib.llama_memory_seq_rm(self.memory, 0, length, -1)
        self._length = min(self._length, length)

    def reset(self) -> None:
        self.lib.llama_memory_clear(self.memory, True)
        self._length = 0

    def prefill(self, runs: Sequence[Run], before_chunk: BeforeChunk) -> torch.Tensor:
        done = 0
        logits = None
        for run in runs:
            count = len(run) if isinstance(run, list) else run.shape[0]
            for start in range(0, count, CHUNK):
                before_chunk(done)
                logits = self._feed(run[start : start + CHUNK])
                done += min(CHUNK, count - start)
        if logits is None:
            raise ValueError("a prefill needs at least one position")
        return logits

    def step(self, token: int) -> torch.Tensor:
        return self._feed([token])

    def _feed(self, run: Run) -> torch.Tensor:
        """Decode up to CHUNK positions after the cache; the last one's logits [1, vocab] float32."""
        if isinstance(run, list):
            batch, count = self.token_batch, len(run)
            for index, token in enumerate(run):
                batch.token[index] = token
        else:
            batch, count = self.embedding_batch, run.shape[0]
            if run.shape[1] != self.model.hidden:
                raise ValueError(f"embeddings of width {run.shape[1]} for a model of width {self.model.hidden}")
            values = np.ascontiguousarray(run.detach().to("cpu", torch.float32).numpy())  # [count, hidden]
            ctypes.memmove(batch.embd, values.ctypes.data, values.nbytes)
        batch.n_tokens = count
        for index in range(count):
            batch.pos[index] = self._length + index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = 0
            batch.logits[index] = index == count - 1
        status = self.lib.llama_decode(self.context, batch)
        if status != 0:
            raise XvlmError(f"llama.cpp could not run the language model (llama_decode returned {status}).")
        self._length += count
        pointer = self.lib.llama_get_logits_ith(self.context, -1)
        row = np.ctypeslib.as_array(pointer, shape=(self.model.vocab,))
        return torch.from_numpy(row.copy()).unsqueeze(0)  # [1, vocab]
