"""Choosing where the model runs and in which precision."""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path

import torch

from xvlm_core.errors import DeviceError, Remedy

try:
    import resource
except ImportError:  # Windows
    resource = None

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when the processor has bf16 instructions (AVX-512 BF16, AMX or Arm BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        flags = ""
    # Without /proc (macOS, Windows) fp32 is the safe choice; a forced dtype still works.
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16", " bf16"))


# The instruction sets a CPU decode's speed depends on, as /proc/cpuinfo names them.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo(cpuinfo_file: Path) -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (the others are alike); empty where there is none."""
    try:
        cpuinfo = cpuinfo_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _flags(fields: dict[str, str]) -> set[str] | None:
    flags = fields.get("flags", fields.get("Features"))
    return set(flags.split()) if flags is not None else None


def cpu_flags(cpuinfo_file: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The instruction sets the processor reports (Linux's names: avx2, avx512f, ...); None where it cannot be told."""
    return _flags(_cpuinfo(cpuinfo_file))


def processor(cpuinfo_file: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The processor's model name and which of SPEED_FLAGS it has (on Linux; elsewhere what `platform` says)."""
    import platform

    fields = _cpuinfo(cpuinfo_file)
    flags = _flags(fields) or set()
    return {
        "processor": fields.get("model name") or platform.processor() or platform.machine() or "unknown",
        "processor_flags": " ".join(flag for flag in SPEED_FLAGS if flag in flags),
    }


def available_devices() -> list[tuple[str, str]]:
    """(device string, label for people) for every device this machine offers, "auto" first."""
    devices = [("auto", "Automatic"), ("cpu", "CPU")]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            devices.append((f"cuda:{index}", f"GPU {index}: {torch.cuda.get_device_name(index)}"))
    if torch.backends.mps.is_available():
        devices.append(("mps", "Apple GPU (Metal)"))
    return devices


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise DeviceError(f"'{requested}' is not a device name (try auto, cpu, cuda, cuda:1 or mps).") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("No CUDA GPU is available (or this build of PyTorch has no CUDA support).")
        if (device.index or 0) >= torch.cuda.device_count():
            raise DeviceError(f"There is no GPU {device.index}; this machine has {torch.cuda.device_count()}.")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("The Apple GPU (MPS) is not available on this machine.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"Device '{requested}' is not supported (use auto, cpu, cuda or mps).")
    return device


def pick_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    if requested != "auto":
        if requested not in DTYPES:
            raise DeviceError(f"'{requested}' is not a dtype (use auto, float32, float16 or bfloat16).",
                              code=Remedy.CHOOSE_PRECISION)
        dtype = DTYPES[requested]
        if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise DeviceError("This GPU does not support bfloat16; use float16.", code=Remedy.CHOOSE_PRECISION)
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def memory_in_use_mb(device: torch.device) -> float:
    """Memory held by this process on `device` (resident set size for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    if device.type == "mps":
        return torch.mps.current_allocated_memory() / 2**20
    return resident_set_mb()


def resident_set_mb() -> float:
    """Current resident memory of this process in MiB (0 where the platform does not say)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        return peak_resident_set_mb()


def peak_resident_set_mb() -> float:
    """Highest resident memory of this process so far in MiB (0 where the platform does not say)."""
    if resource is None:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def release_freed_memory() -> None:
    """Give memory this process has freed back to the system, where the C library holds on to it.

    glibc keeps large freed blocks for reuse; converting weights layer by layer frees a few hundred MB of
    temporaries, which would otherwise stay in the process's resident memory for as long as it runs.
    """
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None
