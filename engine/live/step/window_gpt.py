"""EnCodecGPT's forward over one padded, fixed-shape window: the exact-mode step's arithmetic.

Exact mode recomputes ``[prompt, last W rows]`` every step. While the window fills, the
sequence is shorter than ``W + 1``; here it is always ``W + 1`` positions long, right-padded::

    position   0        1 .. last                   last+1 .. W
    input      prompt   the window's rows           padding (any valid tokens)

With the causal mask, position ``last`` attends to positions ``0..last`` only, so the padding
changes nothing it sees, and the logits are gathered at ``last`` (a 0-d device tensor): every
fill level runs the same kernels on the same shapes, which is what a CUDA graph needs.

The arithmetic is transformers' GPT2 as :class:`engine.model.encodecgpt.EnCodecGPT` runs it
(``addmm`` with GPT2's ``Conv1D [in, out]`` weights, ``gelu_new``, causal SDPA with scale
``1/sqrt(dh)``, positions 0..W from ``wpe``), on weights copied to a device in one dtype
(fp32, bf16 or fp16). Logits come out in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.model.encodecgpt import EnCodecGPT

_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both are 0.5x(1 + tanh(...)): tanh GELU


@dataclass
class _Block:
    ln1_w: torch.Tensor
    ln1_b: torch.Tensor
    attn_w: torch.Tensor  # [D, 3D]
    attn_b: torch.Tensor
    proj_w: torch.Tensor  # [D, D]
    proj_b: torch.Tensor
    ln2_w: torch.Tensor
    ln2_b: torch.Tensor
    fc_w: torch.Tensor  # [D, 4D]
    fc_b: torch.Tensor
    fc_proj_w: torch.Tensor  # [4D, D]
    fc_proj_b: torch.Tensor


class WindowGPT:
    """A frozen copy of an :class:`EnCodecGPT` that runs a ``[W + 1]``-position window.

    Args:
        model: the reference model (copied; not modified).
        window: W, the most rows the window holds (``W + 1 <= n_positions``).
        device: where the copy lives.
        dtype: float32 (the reference), bfloat16 or float16.
    """

    def __init__(self, model: EnCodecGPT, window: int, device: torch.device | str,
                 dtype: torch.dtype = torch.float32):
        cfg = model.gpt.config
        if cfg.activation_function not in _ACTIVATIONS:
            raise ValueError(f"the window step supports GPT2's gelu_new only, got "
                             f"{cfg.activation_function!r}")
        if window + 1 > cfg.n_positions:
            raise ValueError(f"window {window} needs {window + 1} positions; the model has "
                             f"{cfg.n_positions}")
        self.window, self.num_q, self.dtype = window, model.num_q, dtype
        self.d, self.n_head = cfg.n_embd, cfg.n_head
        self.head_dim = self.d // self.n_head
        self.eps = cfg.layer_norm_epsilon
        sd = {k: v.detach().to(device=device, dtype=dtype) for k, v in model.state_dict().items()
              if v.is_floating_point()}
        self.wpe = sd["gpt.wpe.weight"][: window + 1].clone()  # [W+1, D]
        self.vocab_embed = sd["vocab_embed.weight"]  # [Q·1025, D]
        self.offsets = model.codebook_offsets.to(device)  # [Q]
        self.prompt_proj = None
        if model.prompt_proj is not None:
            self.prompt_proj = (sd["prompt_proj.weight"], sd["prompt_proj.bias"])
        self.blocks = [self._block(sd, f"gpt.h.{i}.") for i in range(cfg.n_layer)]
        self.ln_f = (sd["gpt.ln_f.weight"], sd["gpt.ln_f.bias"])
        self.head = (sd["classification_head.weight"], sd["classification_head.bias"])

    @staticmethod
    def _block(sd: dict[str, torch.Tensor], p: str) -> _Block:
        return _Block(*(sd[p + name] for name in (
            "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
            "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
            "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")))

    def tensors(self) -> list[torch.Tensor]:
        """Every weight tensor (for ``torch._dynamo.mark_static_address``)."""
        out = [self.wpe, self.vocab_embed, self.offsets, *self.ln_f, *self.head]
        out += list(self.prompt_proj or ())
        for b in self.blocks:
            out += list(vars(b).values())
        return out

    def logits(self, prompt: torch.Tensor, rows: torch.Tensor,
               last: torch.Tensor) -> torch.Tensor:
        """Logits of the position ``last`` of ``[prompt, rows]``.

        Args:
            prompt: ``[P]`` prompt vector (any float dtype).
            rows: ``[W, Q]`` int64 delayed tokens (0..1024); rows past ``last`` are padding.
            last: 0-d int64, the position whose logits are wanted (0 = the prompt's,
                ``r`` = the ``r``-th row's); on the device, never read on the host.

        Returns:
            ``[Q, 1025]`` float32.
        """
        x = torch.cat([self._embed_prompt(prompt), self._embed_rows(rows)]) + self.wpe
        for block in self.blocks:  # [W+1, D]
            x = x + self._attention(block, F.layer_norm(x, (self.d,), block.ln1_w,
                                                        block.ln1_b, self.eps))
            h = F.layer_norm(x, (self.d,), block.ln2_w, block.ln2_b, self.eps)
            h = F.gelu(torch.addmm(block.fc_b, h, block.fc_w), approximate="tanh")
            x = x + torch.addmm(block.fc_proj_b, h, block.fc_proj_w)
        h = x.index_select(0, last.view(1))  # [1, D]: only the wanted position goes on
        h = F.layer_norm(h, (self.d,), *self.ln_f, self.eps)
        return F.linear(h, *self.head).float().view(self.num_q, -1)

    def _embed_prompt(self, prompt: torch.Tensor) -> torch.Tensor:
        x = prompt.to(self.dtype)[None]  # [1, P]
        if self.prompt_proj is not None:
            x = F.linear(x, *self.prompt_proj)
        return x  # [1, D]

    def _embed_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return F.embedding(rows + self.offsets, self.vocab_embed).sum(dim=1)  # [W, D]

    def _attention(self, block: _Block, h: torch.Tensor) -> torch.Tensor:
        """``[L, D]`` normed rows → ``[L, D]`` causal self-attention output (projected)."""
        length = h.shape[0]
        qkv = torch.addmm(block.attn_b, h, block.attn_w)  # [L, 3D]
        q, k, v = qkv.view(length, 3, self.n_head, self.head_dim).permute(1, 2, 0, 3)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True,  # each [H, L, dh]
                                           scale=1.0 / math.sqrt(self.head_dim))
        return torch.addmm(block.proj_b, o.transpose(0, 1).reshape(length, self.d),
                           block.proj_w)
