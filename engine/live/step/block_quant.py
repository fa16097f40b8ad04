"""Block-wise weight quantization in the layout of onnxruntime's ``com.microsoft.MatMulNBits``.

A linear ``y = x @ W + b`` with ``W [K, N]`` (GPT2's ``Conv1D`` layout, in × out) is stored per
output column ``n`` in blocks of ``block`` consecutive inputs ``k``; each block has one fp32
scale and one zero point, and ``W[k, n] ≈ (q[k, n] − zero[n, k // block]) · scale[n, k // block]``.

The op's tensors (onnxruntime ``docs/ContribOperators.md``, MatMulNBits):

* ``B`` uint8 ``[N, K / block, block · bits / 8]``: the codes of one block packed along ``k``,
  for 4 bits two per byte, the *lower* nibble first;
* ``scales`` fp32 ``[N, K / block]`` (the activation's dtype);
* ``zero_points`` uint8 ``[N, ceil(K / block · bits / 8)]``: packed like ``B``. Absent means
  ``2^(bits−1)``, which is how the symmetric format is stored (``q + 8``, no zero points).

Pure numpy, so the format is testable where onnxruntime is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BlockQuantized:
    """One quantized ``[K, N]`` weight, ready to be an initializer of MatMulNBits."""

    packed: np.ndarray  # uint8 [N, K // block, block * bits // 8]
    scales: np.ndarray  # float32 [N, K // block]
    zero_points: np.ndarray | None  # uint8 [N, ceil(K // block * bits / 8)], None: 2^(bits-1)
    bits: int
    block: int
    k: int
    n: int

    def dequantize(self) -> np.ndarray:
        """The ``[K, N]`` fp32 weight the op multiplies by (for tests and error budgets)."""
        codes = unpack_codes(self.packed, self.bits)  # [N, kb, block]
        kb = self.k // self.block
        if self.zero_points is None:
            zero = np.full((self.n, kb), 1 << (self.bits - 1), np.float32)
        else:
            zero = unpack_codes(self.zero_points[:, None, :], self.bits)[:, 0, :kb]
        w = (codes.astype(np.float32) - zero[..., None]) * self.scales[..., None]
        return np.ascontiguousarray(w.reshape(self.n, self.k).T)

    @property
    def nbytes(self) -> int:
        """Bytes a one-row matmul streams (codes + scales + zero points)."""
        zp = 0 if self.zero_points is None else self.zero_points.nbytes
        return self.packed.nbytes + self.scales.nbytes + zp


def block_size_for(k: int, block: int) -> int:
    """``block`` halved until it divides ``K`` (small test models: ``K = 64`` with blocks of
    128). MatMulNBits needs a power of two ≥ 16."""
    while k % block and block > 16:
        block //= 2
    if k % block:
        raise ValueError(f"input size {k} has no power-of-two block >= 16")
    return block


def quantize(w_in_out: np.ndarray, bits: int = 4, block: int = 32,
             symmetric: bool = False) -> BlockQuantized:
    """Round ``W [K, N]`` to ``bits``-bit codes per block of ``block`` inputs.

    Asymmetric (default): each block maps ``[min(w, 0), max(w, 0)]`` onto ``0 .. 2^bits − 1``
    with a zero point (0 is exact, so zero weights stay zero). Symmetric: ``±max|w|`` onto
    ``−(2^(bits−1) − 1) .. 2^(bits−1) − 1``, stored with the op's default zero point.
    """
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    w_in_out = np.asarray(w_in_out, dtype=np.float32)
    k, n = w_in_out.shape
    block = block_size_for(k, block)
    kb = k // block
    w = w_in_out.T.reshape(n, kb, block)  # one row per output, blocks along the input
    top = (1 << bits) - 1
    if symmetric:
        mid = 1 << (bits - 1)
        scale = np.abs(w).max(-1) / (mid - 1)
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        codes = np.clip(np.rint(w / scale[..., None]), -mid, mid - 1) + mid
        zero = None
    else:
        lo, hi = np.minimum(w.min(-1), 0.0), np.maximum(w.max(-1), 0.0)
        scale = (hi - lo) / top
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        zero = np.clip(np.rint(-lo / scale), 0, top)
        codes = np.clip(np.rint(w / scale[..., None]) + zero[..., None], 0, top)
        zero = pack_codes(zero.astype(np.uint8)[:, None, :], bits)[:, 0, :]
    return BlockQuantized(pack_codes(codes.astype(np.uint8), bits), scale, zero, bits, block,
                          k, n)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """``[..., m]`` codes < 2^bits → bytes along the last axis (4 bits: low nibble first,
    an odd count padded with a zero nibble)."""
    if bits == 8:
        return np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.shape[-1] % 2:
        pad = np.zeros((*codes.shape[:-1], 1), np.uint8)
        codes = np.concatenate([codes, pad], axis=-1)
    return np.ascontiguousarray(codes[..., 0::2] | (codes[..., 1::2] << 4), dtype=np.uint8)


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of :func:`pack_codes` (4 bits: twice as many codes, padding included)."""
    if bits == 8:
        return packed
    out = np.empty((*packed.shape[:-1], packed.shape[-1] * 2), np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out
