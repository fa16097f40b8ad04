"""The fast mode's weight formats: which exist, which is the default, which step runs them.

============  ==============================================================  ===============
format        weights                                                         step
============  ==============================================================  ===============
``none``      fp32 (the reference)                                            LeanGPT (torch)
``int8``      8-bit per output channel, int8 activations (fbgemm)             LeanGPT (torch)
``bf16``      bfloat16 (only where the CPU has native bf16)                   LeanGPT (torch)
``int4``      4-bit blocks of 32 + 8-bit head (onnxruntime ``MatMulNBits``)   OrtKVStep
``int4-128``  4-bit blocks of 128 + 8-bit head: 16 % fewer bytes a step       OrtKVStep
``int8-128``  8-bit blocks of 128 (symmetric) + 8-bit head                    OrtKVStep
============  ==============================================================  ===============

``auto`` (the live engine's default) is the fastest format that meets the quality bound
below: ``int4-128`` where onnxruntime is installed (the ``cpu`` extra), else ``int8``.
gpt2 one-row step on a 2-vCPU AMD EPYC (``bench/cpu_step.py``, p50): int4-128 5.1 ms,
int4 6.1, int8-128 6.2, int8 (fbgemm) 9.9, fp32 25.6.

Quality bound (teacher-forced, one row per forward as in the live step, against fp32;
``tests/test_weight_formats.py``): mean KL(fp32 ‖ format) per position and codebook ≤
:data:`MAX_MEAN_KL` nats, top-1 agreement ≥ :data:`MIN_TOP1`, and the same argmax wherever
fp32's top-2 logit gap exceeds :data:`CLEAR_GAP` (random and tiny models have near-flat
logits, so agreement on near-ties measures noise, not quality) — on the golden tiny
checkpoint, and on a random gpt2-size model, where blocks of 128 exist (the golden
checkpoint is narrower: its blocks shrink to its width).
Measured on the golden checkpoint: int4 KL 7.6e-6, top-1 0.986; int4-128 7.6e-6 / 0.985;
int8-128 7.4e-6 / 0.984; int8 2.3e-5 / 0.974; bf16 1.5e-6 / 0.987. On random gpt2 (128
positions): int4-128 4.0e-5 / 0.979, int8-128 7.5e-6 / 0.991 (``bench/cpu_step.py``, 250
positions: int4 2.7e-5, int4-128 3.8e-5, int8-128 7.5e-6, int8 3.8e-5).
"""

from __future__ import annotations

import functools

from engine.live.step.kv_step import QUANTIZE_CHOICES, KVStepInputs, LeanGPT
from engine.model.encodecgpt import EnCodecGPT

ORT_WEIGHT_FORMATS = ("int4", "int4-128", "int8-128")  # run by onnxruntime (the cpu extra)
WEIGHT_FORMATS = (*QUANTIZE_CHOICES, *ORT_WEIGHT_FORMATS)
CHOICES = ("auto", *WEIGHT_FORMATS)  # for --quantize
MAX_MEAN_KL = 5e-5
MIN_TOP1 = 0.95
CLEAR_GAP = 0.25

_DESCRIPTION = {
    "none": "fp32 (reference)",
    "int8": "int8 (fbgemm, per-channel)",
    "bf16": "bf16",
    "int4": "int4 (onnxruntime {version} MatMulNBits: 4-bit blocks of 32, 8-bit head)",
    "int4-128": "int4-128 (onnxruntime {version} MatMulNBits: 4-bit blocks of 128, 8-bit head)",
    "int8-128": "int8-128 (onnxruntime {version} MatMulNBits: 8-bit blocks of 128, 8-bit head)",
}


@functools.cache
def onnxruntime_version() -> str | None:
    """The installed onnxruntime's version, or None (the ``cpu`` extra is not installed)."""
    try:
        import onnx  # noqa: F401  (builds the graphs)
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def resolve(quantize: str) -> str:
    """``auto`` → the default format on this machine; other names are checked and returned."""
    if quantize == "auto":
        return "int4-128" if onnxruntime_version() else "int8"
    if quantize not in WEIGHT_FORMATS:
        raise ValueError(f"quantize must be one of {CHOICES}, got {quantize!r}")
    if quantize in ORT_WEIGHT_FORMATS and not onnxruntime_version():
        raise ValueError(f"{quantize} weights need onnxruntime and onnx (pip install "
                         "'encodecgpt-live[cpu]'); without them use int8")
    return quantize


def describe(fmt: str) -> str:
    """One line for the console: what the weights are and what runs them."""
    return _DESCRIPTION[fmt].format(version=onnxruntime_version())


def build_kv_step(model: EnCodecGPT, quantize: str) -> KVStepInputs:
    """The live step for ``quantize`` (``auto`` resolved): LeanGPT or OrtKVStep."""
    fmt = resolve(quantize)
    if fmt in ORT_WEIGHT_FORMATS:
        from engine.live.step.ort_step import OrtKVStep  # onnxruntime is an optional dependency

        return OrtKVStep(model, fmt)
    return LeanGPT(model, fmt)
