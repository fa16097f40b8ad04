"""Where the model runs (``--compute``) and in which number format (``--quantize``).

One flag pair for every backend, resolved once at start into a ``torch.device`` and a
:class:`WeightFormat`; a combination a backend cannot run is refused with a one-line
:class:`~engine.errors.UserError`, never silently ignored:

============  ==========================  ====================================================
--quantize    CPU                         CUDA
============  ==========================  ====================================================
(default)     ``none``                    ``bf16`` where the GPU has it, else ``fp16``
none          fp32 (the reference)        fp32 with TF32 off (parity work)
int8          fast mode (fbgemm)          refused: an fbgemm (CPU) kernel
int4,         fast mode (onnxruntime)     refused: a CPU kernel
int4-128,
int8-128
bf16          fast mode, native bf16      bf16 (compute capability >= 8.0)
              only (AVX512-BF16 / AMX)
fp16          refused: emulated on CPUs   fp16
============  ==========================  ====================================================

On the CPU, ``exact`` mode is the reference model in fp32, so it takes ``none`` only. ``mps``
(Apple silicon) runs the eager path in fp32, fp16 or bf16; it is untested.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from engine.errors import UserError
from engine.live.step.kv_step import bf16_is_native
from engine.live.step.weight_formats import ORT_WEIGHT_FORMATS
from engine.live.step.weight_formats import describe as describe_cpu_format
from engine.live.step.weight_formats import resolve as resolve_cpu_format

COMPUTE_CHOICES = "auto|cpu|cuda|cuda:N|mps"
WEIGHT_FORMATS = ("none", "int8", "int4", "int4-128", "int8-128", "bf16", "fp16")
_CPU_ONLY = ("int8", "int4", "int4-128", "int8-128")


@dataclass(frozen=True)
class WeightFormat:
    """A resolved ``--quantize``.

    Attributes:
        name: the flag value (``none``, ``int8``, ``int4``, ``bf16``, ``fp16``).
        dtype: the dtype weights and activations run in (float32 for the integer formats,
            whose activations stay float).
        device: the compute device it was resolved for.
    """

    name: str
    dtype: torch.dtype
    device: torch.device

    @property
    def label(self) -> str:
        """What the console and ``/engine/info`` show: ``fp32`` for ``none``."""
        return "fp32" if self.name == "none" else self.name


def resolve_compute(name: str) -> torch.device:
    """``--compute`` → a device that is there.

    Args:
        name: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns:
        The ``torch.device`` (``cuda`` resolves to the current CUDA device, ``cuda:0``).

    Raises:
        UserError: a device that is not there, or a name that is none of these.
    """
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if _has_cuda() \
            else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("--compute mps: no Apple-silicon GPU here (MPS is not available); "
                            "use --compute cpu or auto")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise UserError(f"--compute expects {COMPUTE_CHOICES}, got {name!r}")
    if not _has_cuda():
        why = "this torch has no CUDA support" if torch.version.cuda is None \
            else "no CUDA device is visible"
        raise UserError(f"--compute {name}: {why}; use --compute cpu or auto")
    index = torch.cuda.current_device() if match.group(1) is None else int(match.group(1))
    count = torch.cuda.device_count()
    if index >= count:
        raise UserError(f"--compute {name}: there are {count} CUDA device(s), "
                        f"cuda:0..cuda:{count - 1}")
    return torch.device("cuda", index)


def _has_cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def default_weight_format(device: torch.device, mode: str = "exact") -> str:
    """The ``--quantize`` used when none is given (``auto``): bf16/fp16 on CUDA; on the CPU the
    fastest format that meets the quality bound in fast mode (int4-128 with onnxruntime, else
    int8: :func:`engine.live.step.weight_formats.resolve`), the fp32 reference in exact mode."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and mode == "fast":
        return resolve_cpu_format("auto")
    return "none"


def resolve_weights(quantize: str | None, device: torch.device,
                    mode: str = "fast") -> WeightFormat:
    """``--quantize`` (None = the device's default) for ``device`` and ``mode``.

    Raises:
        UserError: the format is unknown, or the backend cannot run it (see the table in
            the module docstring), with what to use instead.
    """
    name = default_weight_format(device, mode) if quantize is None else quantize
    if name not in WEIGHT_FORMATS:
        raise UserError(f"--quantize expects one of {', '.join(WEIGHT_FORMATS)}, got {name!r}")
    if device.type == "cpu":
        _check_cpu(name, mode)
    elif name in _CPU_ONLY:
        default = default_weight_format(device)
        others = " or ".join(f for f in ("bf16", "fp16", "none") if f != default)
        raise UserError(f"--quantize {name} is a CPU kernel; on {device.type} use {default} "
                        f"(the default) or {others}")
    elif device.type == "cuda" and name == "bf16" and not torch.cuda.is_bf16_supported():
        raise UserError("--quantize bf16: this GPU has no bf16 (compute capability < 8.0); "
                        "use fp16 (the default here) or none")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name, torch.float32)
    return WeightFormat(name, dtype, device)


def _check_cpu(name: str, mode: str) -> None:
    if name in ORT_WEIGHT_FORMATS:
        try:  # MatMulNBits formats need onnxruntime (the cpu extra)
            resolve_cpu_format(name)
        except ValueError as e:
            raise UserError(f"--quantize {name}: {e}") from None
    if name == "fp16":
        raise UserError("--quantize fp16 runs on CUDA only (CPU fp16 matmuls are emulated, "
                        "slower than fp32); on the CPU use none, int8, int4 or bf16")
    if mode == "exact" and name != "none":
        raise UserError(f"--quantize {name}: exact mode on the CPU runs the reference model "
                        "in fp32; use --quantize none, or --mode fast for quantized weights")
    if name == "bf16" and not bf16_is_native():
        raise UserError("--quantize bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); "
                        "it would run slower than fp32. Use --quantize int8 or none.")


def apply_precision(fmt: WeightFormat) -> None:
    """Process-wide float settings for ``fmt``: fp32 on CUDA means IEEE fp32 (TF32 off), so
    ``--quantize none`` reproduces the CPU reference within float rounding."""
    if fmt.device.type == "cuda" and fmt.name == "none":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def describe(fmt: WeightFormat) -> str:
    """One line for the console: ``cuda:0 (NVIDIA H100 80GB HBM3), bf16``."""
    where = str(fmt.device)
    if fmt.device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(fmt.device)})"
    if fmt.device.type == "cpu":  # says which kernel runs the CPU formats (e.g. onnxruntime)
        return f"{where}, {describe_cpu_format(fmt.name)}"
    return f"{where}, {fmt.label}"


@contextmanager
def out_of_memory_as_user_error(model: str, window: int) -> Iterator[None]:
    """Turn a CUDA out-of-memory error at start into one line naming the model and window.

    Args:
        model: what was being placed, e.g. ``"gpt2 (124M parameters, bf16)"``.
        window: the token window W.
    """
    try:
        yield
    except torch.OutOfMemoryError:
        raise UserError(f"out of GPU memory placing {model} with window {window}: use a "
                        "smaller model or window, --quantize bf16/fp16, or --compute cpu") \
            from None
