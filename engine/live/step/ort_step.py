"""The live step through onnxruntime: 4- or 8-bit block weights, the whole body in one graph run.

Same contract as :class:`engine.live.step.kv_step.LeanGPT` (``new_cache``, ``embed_tokens``,
``embed_prompt``, ``forward(groups, out_rows)``, the same :class:`KVCache` objects, so the
rolling generator, its background re-prefill and its saved state are unchanged).

Why: a one-row step is memory-bandwidth bound — it streams every weight and the whole KV
cache once. fbgemm int8 streams 1 byte per weight; ``MatMulNBits`` with 4-bit blocks of 32
streams 0.64 (codes, fp32 scale and 4-bit zero point per block) with a kernel that reaches
the same bandwidth, and running the whole body as one graph saves the ~100 torch op
dispatches of a step (attention included: ``GroupQueryAttention`` over the cache, written in
place). See DEVELOPERS.md for the measurements.

Weight formats (``quantize``):

``int4``
    Body linears 4-bit, blocks of 32, asymmetric; the head (``D × Q·1025``, 7 % of the
    weights) 8-bit: at 4 bits the head alone gave 95 % of the KL to fp32 (its error goes
    straight into the logits).
``int4-128``
    The same in blocks of 128 (the default: the fastest within the quality bound).
``int8-128``
    Body linears 8-bit, blocks of 128, symmetric, the same head: int4's speed, a fifth of
    int4-128's KL to fp32.
``ort-fp32``
    fp32 ``MatMul`` everywhere: the same graph without quantization, to test the graph.

Which graph a forward runs: one row group → ``rows`` once; the generator's step while the
prompt moves, ``[prompt at 0, rows at p..]`` on one cache → ``prompt_rows`` once; anything
else → ``rows`` once per group, in increasing ``start`` (the same result as writing every
group's keys/values first, since a row only sees positions up to its own).

Threads: ``forward`` may run on two threads at once (the step and the re-prefill worker) as
long as they use different caches; one cache is never used by two forwards at once.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort
import torch

from engine.live.step.kv_step import KVCache, KVStepInputs, RowGroup
from engine.live.step.ort_graph import FP32, LinearFormat, StepWeights, body_graph, head_graph
from engine.model.encodecgpt import EnCodecGPT

# format -> (body linears, head)
ORT_FORMATS: dict[str, tuple[LinearFormat, LinearFormat]] = {
    "int4": (LinearFormat(bits=4, block=32), LinearFormat(bits=8, block=32, symmetric=True)),
    # 0.535 bytes a weight instead of 0.64: ~12 % fewer bytes a step, a looser fit per block
    "int4-128": (LinearFormat(bits=4, block=128),
                 LinearFormat(bits=8, block=32, symmetric=True)),
    # 8 bits in blocks of 128, symmetric: ~1.03 bytes a weight (fbgemm's int8 streams 1) with
    # a fifth of its KL to fp32, and the whole step in one graph run (fbgemm's runs ~100 ops)
    "int8-128": (LinearFormat(bits=8, block=128, symmetric=True),
                 LinearFormat(bits=8, block=32, symmetric=True)),
    "ort-fp32": (FP32, FP32),
}


@dataclass
class _Binding:
    """One graph bound to one cache for ``S`` rows: input/output buffers and the cache."""

    io: ort.IOBinding
    x: np.ndarray  # [1, S, D] input embeddings + positions
    h: np.ndarray  # [1, S, D] final-normed rows
    seqlens_k: np.ndarray  # [1] int32
    total: np.ndarray  # [] int32
    keep: list = field(default_factory=list)  # OrtValues the binding points into


@dataclass
class _HeadBinding:
    """The head bound to ``n`` rows: ``x [n, D]`` final-normed rows in, ``logits [n, Q·1025]``
    out."""

    io: ort.IOBinding
    x: np.ndarray
    logits: np.ndarray
    keep: list  # the OrtValues over x and logits


class OrtKVStep(KVStepInputs):
    """The live step's body and head as onnxruntime sessions.

    Args:
        model: the reference model (weights are quantized; it is not modified).
        quantize: a key of :data:`ORT_FORMATS`.
        threads: intra-op threads of each session (default: torch's current setting, which
            the live engine sets to 1 per op).
        body, head: override the linear formats (benchmarks).
        profile_prefix: record every run with onnxruntime's profiler (per-node kernel
            times) into files starting with this path; :meth:`end_profiling` names them.
    """

    def __init__(self, model: EnCodecGPT, quantize: str = "int4", *, threads: int | None = None,
                 body: LinearFormat | None = None, head: LinearFormat | None = None,
                 profile_prefix: str | None = None):
        if quantize not in ORT_FORMATS:
            raise ValueError(f"onnxruntime formats are {tuple(ORT_FORMATS)}, got {quantize!r}")
        super().__init__(model)
        self.quantize = quantize
        body = body or ORT_FORMATS[quantize][0]
        head = head or ORT_FORMATS[quantize][1]
        self.formats = (body, head)
        w = StepWeights.from_state_dict(model.state_dict(), self.n_layer, self.n_head, self.eps)
        self._head_width = w.head[0].shape[1]  # Q·1025
        threads = threads or torch.get_num_threads()
        graph, body_bytes = body_graph(w, body, prompt_row=False)
        self._rows = _session(graph, threads, profile_prefix, "rows")
        graph, _ = body_graph(w, body, prompt_row=True)
        self._prompt_rows = _session(graph, threads, profile_prefix, "prompt_rows")
        graph, head_bytes = head_graph(w, head)
        self._head = _session(graph, threads, profile_prefix, "head")
        del graph
        self.weight_bytes = body_bytes + head_bytes  # streamed by a one-row step
        self._wpe = self.wpe.numpy()  # [n_positions, D], the same memory
        # cache -> {(prompt_row, S): _Binding, ("head", n): _HeadBinding}; entries go
        # with their cache.
        self._bindings: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    # -- forward -----------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, groups: Sequence[RowGroup], out_rows: Sequence[int]) -> torch.Tensor:
        """Run all groups through the body; return logits of the chosen rows.

        Args:
            groups: row groups; each group's rows are written into its cache at
                ``start..start+r-1`` and its length becomes ``start + r`` if that is longer.
            out_rows: indices into the concatenated rows whose logits are wanted.

        Returns:
            ``[len(out_rows), Q, 1025]`` float32 logits.
        """
        self.check_groups(groups)
        ends = list(itertools.accumulate((g.x.shape[0] for g in groups), initial=0))
        wanted = list(out_rows)
        if any(not 0 <= r < ends[-1] for r in wanted):
            raise IndexError(f"out_rows {wanted}: the groups have {ends[-1]} rows")
        head = self._head_binding(groups[0].cache, len(wanted)) if wanted else None
        # Few numpy calls between runs, none in torch: after a body run has streamed ~60 MB
        # this code runs cache-cold, and each torch op there cost ~10x its warm time (gpt2,
        # the glue around one run: 0.54 ms a step through torch; tiny, warm: 0.04 ms).
        for prompt_row, idx in self._plan(groups):  # a run's groups are consecutive
            a, e = ends[idx[0]], ends[idx[-1] + 1]
            last = groups[idx[-1]]
            b = self._binding(last.cache, prompt_row, e - a)
            for i in idx:  # input embeddings + position embeddings, into the bound input
                g = groups[i]
                np.add(g.x.numpy(), self._wpe[g.start:g.start + ends[i + 1] - ends[i]],
                       out=b.x[0, ends[i] - a:ends[i + 1] - a])
            b.seqlens_k[0] = last.start + last.x.shape[0] - 1
            b.total[...] = last.start + last.x.shape[0]
            (self._prompt_rows if prompt_row else self._rows).run_with_iobinding(b.io)
            for j, r in enumerate(wanted):  # before another run reuses this binding
                if a <= r < e:
                    head.x[j] = b.h[0, r - a]
        for g in groups:
            g.cache.length = max(g.cache.length, g.start + g.x.shape[0])
        if not wanted:  # a prefill: only the caches were wanted
            return torch.zeros(0, self.num_q, 0)
        self._head.run_with_iobinding(head.io)
        # a copy: the caller keeps the logits (last_logits) while the next step runs
        return torch.from_numpy(head.logits.copy()).view(len(wanted), self.num_q, -1)

    def end_profiling(self) -> dict[str, str]:
        """Stop the profiler (``profile_prefix``); returns ``{graph: JSON file}``."""
        return {name: sess.end_profiling() for name, sess in (
            ("rows", self._rows), ("prompt_rows", self._prompt_rows), ("head", self._head))}

    @staticmethod
    def _plan(groups: Sequence[RowGroup]) -> list[tuple[bool, list[int]]]:
        """Graph runs as ``(prompt_row, group indices)``, in execution order."""
        if len(groups) == 1:
            return [(False, [0])]
        a, b = groups[0], groups[1]
        if (len(groups) == 2 and a.cache is b.cache and a.start == 0 and a.x.shape[0] == 1
                and b.start >= 1):
            return [(True, [0, 1])]
        order = sorted(range(len(groups)), key=lambda i: groups[i].start)
        end: dict[int, int] = {}  # id(cache) -> end of the previous group of that cache
        for i in order:
            g = groups[i]
            if g.start < end.get(id(g.cache), 0):
                raise ValueError("row groups of one cache overlap")
            end[id(g.cache)] = g.start + g.x.shape[0]
        return [(False, [i]) for i in order]

    def _binding(self, cache: KVCache, prompt_row: bool, s: int) -> _Binding:
        return self._kept(cache, (prompt_row, s), lambda: self._bind(cache, prompt_row, s))

    def _head_binding(self, cache: KVCache, n: int) -> _HeadBinding:
        """The head for ``n`` rows, kept with the forward's first cache (a cache is in one
        forward at a time, so its forward owns the buffers)."""
        return self._kept(cache, ("head", n), lambda: self._bind_head(n))

    def _kept(self, cache: KVCache, key: tuple, make):
        """The binding ``key`` of ``cache``, made once (any thread)."""
        with self._lock:
            per_cache = self._bindings.setdefault(cache, {})
            if key not in per_cache:
                per_cache[key] = make()
            return per_cache[key]

    def _bind_head(self, n: int) -> _HeadBinding:
        x = np.zeros((n, self.d), np.float32)
        logits = np.zeros((n, self._head_width), np.float32)
        keep = [ort.OrtValue.ortvalue_from_numpy(a) for a in (x, logits)]
        b = _HeadBinding(self._head.io_binding(), x, logits, keep)
        b.io.bind_ortvalue_input("h", keep[0])
        b.io.bind_ortvalue_output("logits", keep[1])
        return b

    def _bind(self, cache: KVCache, prompt_row: bool, s: int) -> _Binding:
        sess = self._prompt_rows if prompt_row else self._rows
        b = _Binding(sess.io_binding(), np.zeros((1, s, self.d), np.float32),
                     np.zeros((1, s, self.d), np.float32), np.zeros(1, np.int32),
                     np.zeros((), np.int32))
        value = ort.OrtValue.ortvalue_from_numpy  # shares the numpy memory (CPU)
        for name, arr in (("x", b.x), ("seqlens_k", b.seqlens_k), ("total", b.total)):
            b.keep.append(value(arr))
            b.io.bind_ortvalue_input(name, b.keep[-1])
        b.keep.append(value(b.h))
        b.io.bind_ortvalue_output("h", b.keep[-1])
        for li in range(self.n_layer):
            for kind, t in (("k", cache.k), ("v", cache.v)):
                ov = value(t[li].numpy()[None])  # [1, H, capacity, dh], the cache's memory
                b.keep.append(ov)
                # past and present are one buffer: GQA writes the new rows in place.
                b.io.bind_ortvalue_input(f"past_{kind}{li}", ov)
                b.io.bind_ortvalue_output(f"{kind}{li}", ov)
                if prompt_row:
                    b.io.bind_ortvalue_output(f"{kind}p{li}", ov)
        return b


def _session(graph, threads: int, profile_prefix: str | None = None,
             name: str = "") -> ort.InferenceSession:
    so = ort.SessionOptions()
    if profile_prefix:  # onnxruntime appends a timestamp and .json
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix + name
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # With threads > 1 a spinning pool would steal the core the decoder runs on.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(graph.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
