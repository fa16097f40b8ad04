"""The EnCodecGPT forward as plain tensor ops over preallocated KV caches (the live step).

transformers' GPT2 is the reference (``engine.model.encodecgpt``); this is the same arithmetic
without its per-call bookkeeping, shaped for the rolling generator:

* one forward takes several **row groups**, each continuing its own :class:`KVCache` at its
  own positions. All rows share the weight matrices in one matmul per layer, so a step can
  carry the next window's re-prefill rows and a prompt recompute almost for free: a one-row
  step streams every weight from memory anyway (it is memory-bandwidth bound);
* keys/values of every row are written before any row attends, so a row group that rewrites
  position 0 (a new prompt) is seen by the other groups of the same cache in that forward;
* caches are preallocated (``[n_layer, H, capacity, dh]``) and never grow — the shape a
  static-cache / CUDA-graph path needs later;
* weights can be fp32 (reference), bf16, or int8 (dynamic per-row activation quantization,
  per-output-channel weights through fbgemm; GPT2's ``Conv1D`` ``[in, out]`` weights are
  transposed into Linear form first). 4-bit weights run through onnxruntime instead
  (:mod:`engine.live.step.ort_step`, same contract: :class:`KVStepInputs` + ``forward``);
  :func:`engine.live.step.weight_formats.build_kv_step` picks the step for a format.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.live.state import StateReader
from engine.model.encodecgpt import EnCodecGPT

QUANTIZE_CHOICES = ("none", "int8", "bf16")


def bf16_is_native() -> bool:
    """True where the CPU has bf16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 matmuls are
    emulated and slower than fp32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


class _Linear:
    """``y = x @ W + b`` for ``x [R, in]``; the storage is chosen once for the backend."""

    def __init__(self, weight_in_out: torch.Tensor, bias: torch.Tensor, quantize: str):
        self.quantize = quantize
        w = weight_in_out.detach().float()
        b = bias.detach().float()
        if quantize == "int8":
            w_out_in = w.t().contiguous()
            scales = (w_out_in.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
            zeros = torch.zeros(w_out_in.shape[0], dtype=torch.long)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                qw = torch.quantize_per_channel(w_out_in, scales, zeros, 0, torch.qint8)
                self.packed = torch.ops.quantized.linear_prepack(qw, b)
        elif quantize == "bf16":
            self.w, self.b = w.to(torch.bfloat16), b.to(torch.bfloat16)
        else:
            # [in, out] row-major: MKL's 1-row gemm is faster in this layout than F.linear's.
            self.w, self.b = w.contiguous(), b

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize == "int8":
            # reduce_range: fbgemm's AVX2 kernels saturate 8-bit activations otherwise.
            return torch.ops.quantized.linear_dynamic(x, self.packed, True)
        if self.quantize == "bf16":
            return torch.addmm(self.b, x.to(torch.bfloat16), self.w).float()
        return torch.addmm(self.b, x, self.w)


@dataclass
class _Layer:
    ln1: tuple[torch.Tensor, torch.Tensor]
    qkv: _Linear
    proj: _Linear
    ln2: tuple[torch.Tensor, torch.Tensor]
    fc: _Linear
    fc_proj: _Linear


class KVCache:
    """Keys and values of one sequence: ``k, v [n_layer, H, capacity, dh]``, ``length`` used."""

    def __init__(self, n_layer: int, n_head: int, capacity: int, head_dim: int):
        shape = (n_layer, n_head, capacity, head_dim)
        self.k = torch.zeros(shape)
        self.v = torch.zeros(shape)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def get_state(self) -> dict:
        """A copy: ``{"k", "v": [n_layer, H, capacity, dh], "length": int}``."""
        return {"k": self.k.clone(), "v": self.v.clone(), "length": self.length}

    def set_state(self, state: dict) -> None:
        """Copy a :meth:`get_state` of a cache of the same shape into this one (in place: the
        cache stays preallocated)."""
        with StateReader(state, "KV cache") as s:
            k, v, length = s.pop("k"), s.pop("v"), s.pop("length")
        if k.shape != self.k.shape or v.shape != self.v.shape:
            raise ValueError(f"KV cache state of shape {tuple(k.shape)} does not fit a cache "
                             f"of shape {tuple(self.k.shape)}")
        self.k.copy_(k)
        self.v.copy_(v)
        self.length = int(length)


@dataclass
class RowGroup:
    """Rows that continue ``cache`` at positions ``start .. start + r - 1``.

    ``x`` is ``[r, D]`` input embeddings (prompt or summed codebook embeddings) without the
    position embedding. ``start = 0`` rewrites the prompt position.
    """

    cache: KVCache
    start: int
    x: torch.Tensor


class KVStepInputs:
    """What every live step shares, whatever runs its body: the model's sizes, the input
    embeddings (``embed_tokens``, ``embed_prompt``, the position table ``wpe``) and the
    caches it continues (``new_cache``). :class:`LeanGPT` (torch) and
    :class:`engine.live.step.ort_step.OrtKVStep` (onnxruntime) add ``forward(groups, out_rows)``.

    Args:
        model: the reference model (its weights are copied; it is not modified).
    """

    quantize: str  # the weight format, set by the subclass

    def __init__(self, model: EnCodecGPT):
        cfg = model.gpt.config
        self.num_q = model.num_q
        self.n_layer, self.n_head, self.d = cfg.n_layer, cfg.n_head, cfg.n_embd
        self.head_dim = self.d // self.n_head
        self.eps = cfg.layer_norm_epsilon
        self.max_positions = cfg.n_positions
        if cfg.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"lean step supports GPT2's gelu_new only, got "
                             f"{cfg.activation_function!r}")
        sd = model.state_dict()
        self.wpe = sd["gpt.wpe.weight"].detach().float().clone()
        self.vocab_embed = sd["vocab_embed.weight"].detach().float().clone()
        self.offsets = model.codebook_offsets.clone()
        self.prompt_proj = None
        if model.prompt_proj is not None:
            self.prompt_proj = (sd["prompt_proj.weight"].detach().float().clone(),
                                sd["prompt_proj.bias"].detach().float().clone())

    def new_cache(self, capacity: int) -> KVCache:
        if capacity > self.max_positions:
            raise ValueError(f"cache of {capacity} positions exceeds n_positions "
                             f"{self.max_positions}")
        return KVCache(self.n_layer, self.n_head, capacity, self.head_dim)

    # -- inputs ------------------------------------------------------------------------
    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[r, Q]`` delayed tokens → ``[r, D]``."""
        return self.vocab_embed[tokens + self.offsets].sum(dim=1)

    def embed_prompt(self, prompt: torch.Tensor) -> torch.Tensor:
        """``[P]`` prompt vector → ``[1, D]``."""
        x = prompt.float()[None]
        if self.prompt_proj is not None:
            x = F.linear(x, *self.prompt_proj)
        return x

    @staticmethod
    def check_groups(groups: Sequence[RowGroup]) -> None:
        for g in groups:
            if g.start + g.x.shape[0] > g.cache.capacity:
                raise ValueError(f"rows up to position {g.start + g.x.shape[0]} exceed the "
                                 f"cache capacity {g.cache.capacity}")


class LeanGPT(KVStepInputs):
    """A frozen, inference-only copy of an :class:`EnCodecGPT` for the live step (torch).

    Args:
        model: the reference model (its weights are copied/quantized; it is not modified).
        quantize: ``"none"`` (fp32, the reference), ``"int8"`` or ``"bf16"``.
    """

    def __init__(self, model: EnCodecGPT, quantize: str = "none"):
        if quantize not in QUANTIZE_CHOICES:
            raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {quantize!r}")
        super().__init__(model)
        self.quantize = quantize
        sd = {k: v.detach().float() for k, v in model.state_dict().items()}
        self.layers = [self._layer(sd, f"gpt.h.{i}.", quantize) for i in range(self.n_layer)]
        self.ln_f = (sd["gpt.ln_f.weight"], sd["gpt.ln_f.bias"])
        head_w = sd["classification_head.weight"].t()  # Linear [out, in] → [in, out]
        self.head_linear = _Linear(head_w, sd["classification_head.bias"], quantize)

    @staticmethod
    def _layer(sd: dict, p: str, quantize: str) -> _Layer:
        def lin(name: str) -> _Linear:  # GPT2 Conv1D: weight [in, out]
            return _Linear(sd[p + name + ".weight"], sd[p + name + ".bias"], quantize)

        return _Layer(
            ln1=(sd[p + "ln_1.weight"], sd[p + "ln_1.bias"]),
            qkv=lin("attn.c_attn"),
            proj=lin("attn.c_proj"),
            ln2=(sd[p + "ln_2.weight"], sd[p + "ln_2.bias"]),
            fc=lin("mlp.c_fc"),
            fc_proj=lin("mlp.c_proj"),
        )

    # -- forward -----------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, groups: Sequence[RowGroup], out_rows: Sequence[int]) -> torch.Tensor:
        """Run all groups through the body; return logits of the chosen rows.

        Args:
            groups: row groups (at least one row in all); each group's rows are written into
                its cache at ``start..start+r-1`` and its length becomes ``start + r`` if that
                is longer.
            out_rows: indices into the concatenated rows whose logits are wanted.

        Returns:
            ``[len(out_rows), Q, 1025]`` float32 logits.
        """
        self.check_groups(groups)
        spans, pos, xs = [], [], []
        row = 0
        for g in groups:
            r = g.x.shape[0]
            spans.append((row, row + r))
            xs.append(g.x)
            pos.append(torch.arange(g.start, g.start + r))
            row += r
        x = torch.cat(xs) + self.wpe[torch.cat(pos)]  # [R, D]
        for li, layer in enumerate(self.layers):
            x = x + self._attention(li, layer, F.layer_norm(x, (self.d,), *layer.ln1,
                                                            self.eps), groups, spans)
            h = F.layer_norm(x, (self.d,), *layer.ln2, self.eps)
            x = x + layer.fc_proj(F.gelu(layer.fc(h), approximate="tanh"))
        for g in groups:
            g.cache.length = max(g.cache.length, g.start + g.x.shape[0])
        if not out_rows:  # a prefill: only the caches were wanted
            return torch.zeros(0, self.num_q, 0)
        h = F.layer_norm(x[list(out_rows)], (self.d,), *self.ln_f, self.eps)
        return self.head_linear(h).float().view(len(out_rows), self.num_q, -1)

    def _attention(self, li: int, layer: _Layer, h: torch.Tensor,
                   groups: Sequence[RowGroup], spans: list[tuple[int, int]]) -> torch.Tensor:
        """``[R, D]`` normed rows → ``[R, D]`` attention output (projected)."""
        nh, dh = self.n_head, self.head_dim
        qkv = layer.qkv(h).float()  # [R, 3D]
        q, k, v = qkv.view(-1, 3, nh, dh).permute(1, 2, 0, 3)  # each [H, R, dh]
        for g, (a, b) in zip(groups, spans, strict=True):  # write every row's K/V first
            g.cache.k[li, :, g.start : g.start + b - a] = k[:, a:b]
            g.cache.v[li, :, g.start : g.start + b - a] = v[:, a:b]
        outs = []
        for g, (a, b) in zip(groups, spans, strict=True):
            r, end = b - a, g.start + b - a
            keys, values = g.cache.k[li, :, :end], g.cache.v[li, :, :end]
            # Two bmm and a softmax: for a few query rows over <= 300 cached positions this
            # is ~1 ms per gpt2 step cheaper than SDPA's CPU kernel (DEVELOPERS.md).
            scores = torch.bmm(q[:, a:b], keys.transpose(1, 2)).mul_(1.0 / math.sqrt(dh))
            if r > 1:  # row i sees positions <= start + i
                future = torch.arange(end)[None, :] > torch.arange(g.start, end)[:, None]
                scores.masked_fill_(future, float("-inf"))
            o = torch.bmm(scores.softmax(-1), values)  # [H, r, dh]
            outs.append(o.transpose(0, 1).reshape(r, nh * dh))
        return layer.proj(torch.cat(outs) if len(outs) > 1 else outs[0])
