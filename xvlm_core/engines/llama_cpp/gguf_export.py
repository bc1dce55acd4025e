"""The language model of a checkpoint as a GGUF file llama.cpp reads (arch "llama"), made once and cached.

The exact file keeps the weights in the number format the PyTorch engine would compute in (float32,
bfloat16 or float16), with the checkpoint's SentencePiece vocabulary; the 8- and 4-bit files are made from it
by llama.cpp's own quantizer (Q8_0 and Q4_K_M). Files are written beside their final name and renamed into
place, so a quit or a full disk never leaves a file that looks finished. Each use marks a file as used; the cache
keeps the KEPT_FILES most recently used (a model's exact, 8-bit and 4-bit files), so a checkpoint downloaded again
or a precision not used any more does not leave gigabytes behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from stat import S_ISREG

import numpy as np
import platformdirs
import torch

from xvlm_core.errors import CheckpointError, Remedy, XvlmError
from xvlm_core.model import checkpoint
from xvlm_core.model.config import LanguageConfig
from xvlm_core.model.tokenizer import Tokenizer
from xvlm_core.stages import QUANTIZING_FOR_LLAMA_CPP, Stage

log = logging.getLogger(__name__)

# Part of every cache key: a change to what the files hold makes new ones instead of reusing old ones.
CONVERTER_VERSION = 1
# --quantize -> llama.cpp's file type (llama.h: LLAMA_FTYPE_MOSTLY_Q8_0, LLAMA_FTYPE_MOSTLY_Q4_K_M).
QUANTIZED_FTYPES = {"int8": 7, "int4": 15}
QUANTIZED_NAMES = {"int8": "Q8_0", "int4": "Q4_K_M"}
# The exact file's weights, by the dtype the PyTorch engine would use: (GGML type, llama.cpp file type).
EXACT_TYPES = {torch.float32: (0, 0), torch.float16: (1, 1), torch.bfloat16: (30, 32)}
# SentencePiece piece kinds as GGUF token types (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, UNUSED, BYTE = 1, 2, 3, 5, 6
# Converted files the cache keeps, the most recently used (those of the model being loaded among them): one model's
# three precisions, so switching between them never converts again.
KEPT_FILES = 3
# A file used, or a partial one written, this recently may be part of another process's load: it stays.
IN_USE_S = 3600.0
# The cache's own names (`cache_key`), and those of the files being written (`_written`); nothing else is touched.
_CACHED_NAME = re.compile(r"[0-9a-f]{32}\.gguf")
_PARTIAL_NAME = re.compile(r"\.[0-9a-f]{32}\..+\.partial")


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("xvlm-chat", appauthor=False)) / "gguf"


def cache_key(weight_files: list[Path], dtype: torch.dtype, quantize: str) -> str:
    """Which weights (names, sizes, modification times), in which number format, by which converter."""
    hasher = hashlib.sha256(f"v{CONVERTER_VERSION} {dtype} {quantize}".encode())
    for path in weight_files:
        stat = path.stat()
        hasher.update(f"\n{path.resolve()} {stat.st_size} {stat.st_mtime_ns}".encode())
    return hasher.hexdigest()[:32]


def gguf_file(
    weight_files: list[Path],
    language: LanguageConfig,
    tokenizer: Tokenizer,
    dtype: torch.dtype,
    quantize: str,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> Path:
    """The cached GGUF of the checkpoint's language model for `dtype` and `quantize`, made first if missing; the
    cache is pruned once it is there."""
    if dtype not in EXACT_TYPES:
        raise XvlmError(f"llama.cpp cannot hold the weights in {dtype}.", code=Remedy.CHOOSE_PRECISION)
    path = _cached_file(weight_files, language, tokenizer, dtype, quantize, on_stage)
    prune(path.parent, keep=[path])
    return path


def _cached_file(
    weight_files: list[Path],
    language: LanguageConfig,
    tokenizer: Tokenizer,
    dtype: torch.dtype,
    quantize: str,
    on_stage: Callable[[str], None],
) -> Path:
    path = cache_dir() / f"{cache_key(weight_files, dtype, quantize)}.gguf"
    if path.is_file():
        _mark_used(path)
    elif quantize == "none":
        on_stage(Stage.CONVERTING_FOR_LLAMA_CPP)
        with _written(path) as partial:
            write_gguf(partial, weight_files, language, tokenizer, dtype)
    else:  # made from the exact file, which is then the most recently used after this one: `prune` keeps it
        exact = _cached_file(weight_files, language, tokenizer, dtype, "none", on_stage)
        on_stage(QUANTIZING_FOR_LLAMA_CPP[quantize])
        with _written(path) as partial:
            quantize_gguf(exact, partial, quantize)
    return path


def prune(folder: Path, keep: Collection[Path] = ()) -> list[Path]:
    """Remove the cache's converted files beyond the KEPT_FILES most recently used, and partial ones a killed
    process left; never those in `keep` or used within IN_USE_S. Returns what was removed. A file that cannot be
    removed (another program holds it open) is left for the next time: pruning never stops a load."""
    now = time.time()
    try:
        entries = [(entry, entry.lstat()) for entry in folder.iterdir()]
    except OSError:
        return []
    cached = sorted(((entry, stat) for entry, stat in entries
                     if _CACHED_NAME.fullmatch(entry.name) and S_ISREG(stat.st_mode)),
                    key=lambda item: item[1].st_mtime, reverse=True)  # the most recently used first
    kept = {Path(path).name for path in keep}
    others = [entry.name for entry, _ in cached if entry.name not in kept]
    kept.update(others[: max(0, KEPT_FILES - len(kept))])
    doomed = [entry for entry, stat in cached if entry.name not in kept and now - stat.st_mtime > IN_USE_S]
    doomed += [entry for entry, stat in entries
               if _PARTIAL_NAME.fullmatch(entry.name) and now - stat.st_mtime > IN_USE_S]
    removed = []
    for entry in doomed:
        try:
            entry.unlink()
        except OSError as exc:
            log.info("could not remove %s from the llama.cpp cache (%s); it stays for now", entry, exc.strerror)
        else:
            removed.append(entry)
    if removed:
        log.info("removed %d file(s) no longer used from the llama.cpp cache", len(removed))
    return removed


def _mark_used(path: Path) -> None:
    """The file's modification time becomes now: `prune` keeps the most recently used."""
    with contextlib.suppress(OSError):  # a read-only cache: the file is still good to read
        os.utime(path)


@contextlib.contextmanager
def _written(path: Path) -> Iterator[Path]:
    """A temporary name in `path`'s folder to write to; renamed to `path` only once written whole."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".partial", dir=path.parent)
        os.close(handle)
    except OSError as exc:
        raise _disk_error(path.parent, exc) from None
    partial = Path(name)
    try:
        yield partial
        os.replace(partial, path)
    except OSError as exc:
        raise _disk_error(path.parent, exc) from None
    finally:
        partial.unlink(missing_ok=True)


def _disk_error(folder: Path, exc: OSError) -> XvlmError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return XvlmError(
            f"The disk is full: the language model converted for llama.cpp does not fit in {folder}.",
            code=Remedy.FREE_DISK,
        )
    return XvlmError(f"The language model converted for llama.cpp cannot be written to {folder} ({exc.strerror}).",
                     code=Remedy.CHOOSE_FOLDER)


def write_gguf(
    path: Path, weight_files: list[Path], language: LanguageConfig, tokenizer: Tokenizer, dtype: torch.dtype
) -> None:
    """Write the language model's weights, shape and vocabulary to `path`, one tensor at a time."""
    import gguf

    ggml_type, file_type = EXACT_TYPES[dtype]
    names = gguf_names(language)
    state = checkpoint.read_weights(weight_files, names.__contains__)  # memory-mapped: read as written
    where = weight_files[0].parent
    missing = sorted(set(names) - set(state))
    if missing:
        raise CheckpointError(f"{where}: the checkpoint has no language model weights for llama.cpp "
                              f"({len(missing)} missing, first: {missing[0]}).")
    expected = expected_shapes(language)
    for key, tensor in state.items():
        if tuple(tensor.shape) != expected[key]:
            raise CheckpointError(f"{where}: '{key}' has shape {tuple(tensor.shape)} but the config implies "
                                  f"{expected[key]}.")
    writer = gguf.GGUFWriter(path, "llama")
    _write_metadata(writer, language, tokenizer, file_type)
    for key, name in names.items():
        shape = expected[key]
        is_matrix = len(shape) == 2
        element = torch.tensor([], dtype=dtype).element_size() if is_matrix else 4
        raw_type = gguf.GGMLQuantizationType(ggml_type if is_matrix else 0)
        writer.add_tensor_info(name, shape, np.dtype(np.uint16 if element == 2 else np.float32),
                               int(np.prod(shape)) * element, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for key in names:
        writer.write_tensor_data(_as_stored(_for_llama(key, state[key], language), dtype))
    writer.close()


def expected_shapes(language: LanguageConfig) -> dict[str, tuple[int, ...]]:
    """Each language-model weight's shape, as the config implies it."""
    hidden, head_dim = language.hidden_size, language.hidden_size // language.num_attention_heads
    kv_rows, ffn = language.num_key_value_heads * head_dim, language.intermediate_size
    per_layer = {
        "input_layernorm": (hidden,), "self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (kv_rows, hidden),
        "self_attn.v_proj": (kv_rows, hidden), "self_attn.o_proj": (hidden, hidden),
        "post_attention_layernorm": (hidden,), "mlp.gate_proj": (ffn, hidden), "mlp.up_proj": (ffn, hidden),
        "mlp.down_proj": (hidden, ffn),
    }
    shapes = {"model.embed_tokens.weight": (language.vocab_size, hidden)}
    for layer in range(language.num_hidden_layers):
        for part, shape in per_layer.items():
            shapes[f"model.layers.{layer}.{part}.weight"] = shape
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (language.vocab_size, hidden)
    return shapes


def gguf_names(language: LanguageConfig) -> dict[str, str]:
    """Checkpoint key -> GGUF tensor name, in the order the file holds them."""
    names = {"model.embed_tokens.weight": "token_embd.weight"}
    per_layer = {
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    }
    for layer in range(language.num_hidden_layers):
        for ours, theirs in per_layer.items():
            names[f"model.layers.{layer}.{ours}.weight"] = f"blk.{layer}.{theirs}.weight"
    names["model.norm.weight"] = "output_norm.weight"
    names["lm_head.weight"] = "output.weight"
    return names


def _for_llama(key: str, tensor: torch.Tensor, language: LanguageConfig) -> torch.Tensor:
    """HF LLaMA's query and key rows pair each rotary dimension with the one half a head away; llama.cpp's
    with its neighbour: reorder the rows of each head from halves to interleaved pairs."""
    if key.endswith("q_proj.weight"):
        return _interleave_heads(tensor, language.num_attention_heads)
    if key.endswith("k_proj.weight"):
        return _interleave_heads(tensor, language.num_key_value_heads)
    return tensor


def _interleave_heads(weight: torch.Tensor, heads: int) -> torch.Tensor:
    rows, columns = weight.shape  # [heads * head_dim, hidden]
    halves = weight.reshape(heads, 2, rows // heads // 2, columns)  # [heads, 2, head_dim / 2, hidden]
    return halves.transpose(1, 2).reshape(rows, columns)


def _as_stored(tensor: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """Matrices in `dtype` (bfloat16 as its raw 16 bits, which numpy lacks); norms in float32."""
    if tensor.dim() == 1:
        return tensor.float().contiguous().numpy()
    converted = tensor.to(dtype).contiguous()
    return converted.view(torch.int16).numpy().view(np.uint16) if converted.element_size() == 2 else converted.numpy()


def _write_metadata(writer, language: LanguageConfig, tokenizer: Tokenizer, file_type: int) -> None:
    head_dim = language.hidden_size // language.num_attention_heads
    writer.add_name("Xmodel-LM")
    writer.add_file_type(file_type)
    writer.add_context_length(language.max_position_embeddings)
    writer.add_embedding_length(language.hidden_size)
    writer.add_block_count(language.num_hidden_layers)
    writer.add_feed_forward_length(language.intermediate_size)
    writer.add_head_count(language.num_attention_heads)
    writer.add_head_count_kv(language.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(language.rope_theta))
    writer.add_layer_norm_rms_eps(float(language.rms_norm_eps))
    writer.add_vocab_size(language.vocab_size)
    tokens, scores, types = _vocabulary(tokenizer, language.vocab_size)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(tokenizer.bos_id)
    writer.add_eos_token_id(tokenizer.eos_id)
    unknown = tokenizer.sp.unk_id()
    if unknown >= 0:
        writer.add_unk_token_id(unknown)


def _vocabulary(tokenizer: Tokenizer, size: int) -> tuple[list[str], list[float], list[int]]:
    """Pieces, scores and kinds for `size` rows; rows past the tokenizer's pieces are named unused padding."""
    sp = tokenizer.sp
    tokens, scores, types = [], [], []
    for index in range(size):
        if index >= tokenizer.vocab_size:
            tokens.append(f"[PAD{index}]")
            scores.append(-1000.0)
            types.append(UNUSED)
            continue
        tokens.append(sp.id_to_piece(index))
        scores.append(sp.get_score(index))
        kind = NORMAL
        if sp.is_unknown(index):
            kind = UNKNOWN
        elif sp.is_control(index):
            kind = CONTROL
        elif sp.is_byte(index):
            kind = BYTE
        elif sp.is_unused(index):
            kind = UNUSED
        types.append(kind)
    return tokens, scores, types


def quantize_gguf(source: Path, target: Path, quantize: str) -> None:
    """llama.cpp's own quantizer: `source` (exact) to `target` in Q8_0 or Q4_K_M."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTIZED_FTYPES[quantize]
    params.nthread = torch.get_num_threads()
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise XvlmError(f"llama.cpp could not quantize the language model to {QUANTIZED_NAMES[quantize]} "
                        f"(status {status}); see the log.")


def weight_types(path: Path) -> str:
    """The GGUF file's tensor types, with how many tensors hold each: "Q4_K x155; Q6_K x24; F32 x49"."""
    import gguf

    counts: dict[str, int] = {}
    for tensor in gguf.GGUFReader(path).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return "; ".join(f"{name} x{count}" for name, count in counts.items())


def decode_bytes(path: Path) -> int:
    """Bytes of weights one decoded token reads from the GGUF file: all but the embedding table's."""
    import gguf

    return sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors if t.name != "token_embd.weight")
