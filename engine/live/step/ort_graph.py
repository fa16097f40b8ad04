"""ONNX graphs of the EnCodecGPT live step for onnxruntime (built with ``onnx.helper``).

Three graphs share one set of weights (each session prepacks its own copy):

``rows``
    One row group: ``S`` rows continuing one cache at positions ``start .. start+S−1``.
``prompt_rows``
    The rolling generator's step while the prompt moves: row 0 rewrites the prompt at
    position 0 and rows ``1..S−1`` continue the same cache at ``start..``; the step rows
    attend to the *new* prompt keys/values (as :class:`engine.live.step.kv_step.LeanGPT` does).
``head``
    ``[n, D]`` final-normed rows → ``[n, Q·1025]`` logits (only for the rows asked for).

Body inputs: ``x [1, S, D]`` (input embeddings + position embeddings), ``seqlens_k [1]``
int32 = ``start + S − 1``, ``total []`` int32 = ``start + S``, and per layer ``l`` the
cache's keys/values ``past_k{l}, past_v{l} [1, H, capacity, dh]``. Outputs: ``h [1, S, D]``
(after ``ln_f``) and per layer ``k{l}, v{l}``: the caller binds each of them to the *same*
memory as ``past_k{l}``/``past_v{l}``, so attention writes the new keys/values in place and
nothing is copied (``com.microsoft.GroupQueryAttention`` shares past and present when they
are one buffer).

Per layer: ``LayerNorm → qkv → GroupQueryAttention → proj → SkipLayerNorm (+ residual, ln_2)
→ fc → FastGelu (GPT2's tanh gelu_new) → fc_proj → SkipLayerNorm (+ residual, next ln_1)``.

Linears are ``com.microsoft.MatMulNBits`` at ``accuracy_level`` 4 (activations quantized to
int8 per block inside the op: the fast kernel; levels 0/1 are 3x slower for 4 bits and 30x
slower for 8 bits), or plain ``MatMul + Add`` in fp32 (to test the graph itself exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.live.step.block_quant import quantize

OPSET = 21  # LayerNormalization exists from 17; 21 is supported by onnxruntime >= 1.16
MS = "com.microsoft"
F32, I32, I64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64


@dataclass(frozen=True)
class LinearFormat:
    """How one linear is stored: ``bits`` 4 or 8 in blocks of ``block`` (asymmetric unless
    ``symmetric``), or ``bits = 32``: fp32 MatMul (no quantization)."""

    bits: int = 4
    block: int = 32
    symmetric: bool = False


FP32 = LinearFormat(bits=32)


@dataclass(frozen=True)
class StepWeights:
    """The model's weights as numpy, linears in GPT2's ``[in, out]`` layout."""

    n_layer: int
    n_head: int
    d: int
    eps: float
    layers: list[dict[str, tuple[np.ndarray, np.ndarray]]]  # ln1 qkv proj ln2 fc fc_proj
    ln_f: tuple[np.ndarray, np.ndarray]
    head: tuple[np.ndarray, np.ndarray]  # [D, Q*1025], [Q*1025]

    @classmethod
    def from_state_dict(cls, sd: dict, n_layer: int, n_head: int, eps: float) -> StepWeights:
        sd = {k: v.detach().float().numpy() for k, v in sd.items()}
        layers = []
        for i in range(n_layer):
            p = f"gpt.h.{i}."
            pair = {n: (sd[f"{p}{k}.weight"], sd[f"{p}{k}.bias"]) for n, k in (
                ("ln1", "ln_1"), ("qkv", "attn.c_attn"), ("proj", "attn.c_proj"),
                ("ln2", "ln_2"), ("fc", "mlp.c_fc"), ("fc_proj", "mlp.c_proj"))}
            layers.append(pair)
        head = (np.ascontiguousarray(sd["classification_head.weight"].T),
                sd["classification_head.bias"])
        return cls(n_layer, n_head, sd["gpt.ln_f.weight"].shape[0], eps, layers,
                   (sd["gpt.ln_f.weight"], sd["gpt.ln_f.bias"]), head)


class _Graph:
    """Nodes and initializers being collected."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.bytes = 0  # weight bytes one row streams

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], domain: str = "", **attrs):
        self.nodes.append(helper.make_node(op, inputs, outputs, domain=domain, **attrs))

    def linear(self, x: str, y: str, wb: tuple[np.ndarray, np.ndarray], name: str,
               fmt: LinearFormat) -> None:
        w, b = wb
        if fmt.bits == 32:
            self.node("MatMul", [x, self.const(name + ".w", w)], [name + ".xw"])
            self.node("Add", [name + ".xw", self.const(name + ".b", b)], [y])
            self.bytes += w.nbytes
            return
        q = quantize(w, fmt.bits, fmt.block, fmt.symmetric)
        zp = self.const(name + ".zp", q.zero_points) if q.zero_points is not None else ""
        ins = [x, self.const(name + ".B", q.packed), self.const(name + ".scales", q.scales), zp,
               "", self.const(name + ".bias", b)]  # 4: g_idx (deprecated, absent)
        self.node("MatMulNBits", ins, [y], MS, K=q.k, N=q.n, bits=q.bits, block_size=q.block,
                  accuracy_level=4)
        self.bytes += q.nbytes

    def layer_norm(self, x: str, y: str, gb: tuple[np.ndarray, np.ndarray], name: str,
                   eps: float) -> None:
        self.node("LayerNormalization", [x, self.const(name + ".g", gb[0]),
                                         self.const(name + ".b", gb[1])], [y],
                  axis=-1, epsilon=eps)

    def skip_layer_norm(self, x: str, skip: str, y: str, total: str | None,
                        gb: tuple[np.ndarray, np.ndarray], name: str, eps: float) -> None:
        """``total = x + skip``; ``y = LayerNorm(total)`` (one pass over the row)."""
        outs = [y, "", "", total] if total else [y]
        self.node("SkipLayerNormalization", [x, skip, self.const(name + ".g", gb[0]),
                                             self.const(name + ".b", gb[1])],
                  outs, MS, epsilon=eps)

    def model(self, inputs, outputs) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "encodecgpt_step", inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid(MS, 1)])
        m.ir_version = 10  # onnxruntime >= 1.20 reads IR 10
        return m


def body_graph(w: StepWeights, body: LinearFormat, prompt_row: bool) -> tuple[onnx.ModelProto,
                                                                               int]:
    """The ``rows`` (or ``prompt_rows``) graph; returns it and the weight bytes per row."""
    g = _Graph()
    d, nh = w.d, w.n_head
    dh = d // nh
    cache = ["1", nh, "capacity", dh]
    inputs = [helper.make_tensor_value_info("x", F32, [1, "S", d]),
              helper.make_tensor_value_info("seqlens_k", I32, [1]),
              helper.make_tensor_value_info("total", I32, [])]
    outputs = [helper.make_tensor_value_info("h", F32, [1, "S", d])]
    gqa = dict(num_heads=nh, kv_num_heads=nh, scale=1.0 / math.sqrt(dh))
    if prompt_row:
        one, zero, big = (g.const(n, np.array([v], np.int64)) for n, v in
                          (("one", 1), ("zero", 0), ("big", 1 << 30)))
        g.const("p.seqlens_k", np.array([0], np.int32))
        g.const("p.total", np.array(1, np.int32))
    x = "x"
    for i, layer in enumerate(w.layers):
        pk, pv, k, v = f"past_k{i}", f"past_v{i}", f"k{i}", f"v{i}"
        inputs += [helper.make_tensor_value_info(n, F32, cache) for n in (pk, pv)]
        outputs += [helper.make_tensor_value_info(n, F32, cache) for n in (k, v)]
        if i == 0:
            g.layer_norm(x, "h0", layer["ln1"], "l0.ln1", w.eps)
        g.linear(f"h{i}", f"qkv{i}", layer["qkv"], f"l{i}.qkv", body)
        if prompt_row:
            # Node P writes the prompt's keys/values at position 0 (it attends to itself
            # only); node S takes P's present as its past, so ORT runs it after P and the
            # step rows see the new prompt. Both presents are bound to the cache memory.
            kp, vp = f"kp{i}", f"vp{i}"
            outputs += [helper.make_tensor_value_info(n, F32, cache) for n in (kp, vp)]
            g.node("Slice", [f"qkv{i}", zero, one, one], [f"qkv{i}.p"])
            g.node("Slice", [f"qkv{i}", one, big, one], [f"qkv{i}.s"])
            g.node("GroupQueryAttention", [f"qkv{i}.p", "", "", pk, pv, "p.seqlens_k",
                                           "p.total"], [f"att{i}.p", kp, vp], MS, **gqa)
            g.node("GroupQueryAttention", [f"qkv{i}.s", "", "", kp, vp, "seqlens_k", "total"],
                   [f"att{i}.s", k, v], MS, **gqa)
            g.node("Concat", [f"att{i}.p", f"att{i}.s"], [f"att{i}"], axis=1)
        else:
            g.node("GroupQueryAttention", [f"qkv{i}", "", "", pk, pv, "seqlens_k", "total"],
                   [f"att{i}", k, v], MS, **gqa)
        g.linear(f"att{i}", f"a{i}", layer["proj"], f"l{i}.proj", body)
        g.skip_layer_norm(f"a{i}", x, f"h2_{i}", f"x1_{i}", layer["ln2"], f"l{i}.ln2", w.eps)
        g.linear(f"h2_{i}", f"f{i}", layer["fc"], f"l{i}.fc", body)
        g.node("FastGelu", [f"f{i}"], [f"g{i}"], MS)  # 0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))
        g.linear(f"g{i}", f"m{i}", layer["fc_proj"], f"l{i}.fc_proj", body)
        last = i + 1 == w.n_layer
        norm = w.ln_f if last else w.layers[i + 1]["ln1"]
        g.skip_layer_norm(f"m{i}", f"x1_{i}", "h" if last else f"h{i + 1}",
                          None if last else f"x{i + 1}", norm,
                          "ln_f" if last else f"l{i + 1}.ln1", w.eps)
        x = f"x{i + 1}"
    return g.model(inputs, outputs), g.bytes


def head_graph(w: StepWeights, fmt: LinearFormat) -> tuple[onnx.ModelProto, int]:
    """``h [n, D]`` (already ``ln_f``-normed) → ``logits [n, Q·1025]``."""
    g = _Graph()
    g.linear("h", "logits", w.head, "head", fmt)
    inputs = [helper.make_tensor_value_info("h", F32, ["n", w.d])]
    outputs = [helper.make_tensor_value_info("logits", F32, ["n", w.head[0].shape[1]])]
    return g.model(inputs, outputs), g.bytes
