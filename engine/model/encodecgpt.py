"""EnCodecGPT: a GPT2 body over summed codebook embeddings, conditioned by a prompt vector.

Layout of one sequence (``L = 1 + T`` positions)::

    position 0      prompt vector (EnCodecMAE time-mean), projected only if its size != D
    position 1 + t  sum over k of vocab_embed[k * 1025 + token[t, k]]   (delayed tokens)

GPT2 gets ``inputs_embeds`` only (its word table ``wte`` is unused; ``wpe`` adds positions
0..L-1). The head maps each position to ``Q * 1025`` logits viewed as ``[B, L, Q, 1025]``;
position ``p`` predicts delayed column ``p`` (position 0, the prompt, predicts the first
column). Module names match the original Lightning checkpoints (``gpt.*``, ``vocab_embed``,
``classification_head``) so their state dicts load by name.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GPT2Config, GPT2Model

from engine.model.config import NUM_CODES, VOCAB_PER_CODEBOOK, GPTSize


def gpt2_config(size: GPTSize) -> GPT2Config:
    """A GPT2Config with the original's defaults (gelu_new, LN eps 1e-5) at ``size``."""
    # wte is unused; a small table has no room for GPT2's bos/eos ids, so drop them.
    special = {} if size.vocab_size > 50256 else {"bos_token_id": None, "eos_token_id": None}
    return GPT2Config(
        n_layer=size.n_layer,
        n_head=size.n_head,
        n_embd=size.n_embd,
        n_positions=size.n_positions,
        vocab_size=size.vocab_size,
        **special,
    )


class EnCodecGPT(nn.Module):
    """The EnCodecGPT language model (inference and training forward).

    Args:
        gpt: GPT2 body configuration.
        num_q: codebooks per frame (8 in every published checkpoint).
        prompt_dim: size of the prompt vector; a Linear projection is added only if it
            differs from ``gpt.n_embd`` (the original has none: EnCodecMAE base is 768 = D).
    """

    def __init__(self, gpt: GPT2Config, num_q: int = 8, prompt_dim: int | None = None):
        super().__init__()
        self.num_q = num_q
        self.num_codes = NUM_CODES
        self.vocab_size = num_q * VOCAB_PER_CODEBOOK
        self.gpt = GPT2Model(gpt)
        d = gpt.n_embd
        self.prompt_dim = prompt_dim or d
        self.vocab_embed = nn.Embedding(self.vocab_size, d)
        self.classification_head = nn.Linear(d, self.vocab_size)
        self.prompt_proj = nn.Linear(self.prompt_dim, d) if self.prompt_dim != d else None
        offsets = torch.arange(num_q) * VOCAB_PER_CODEBOOK
        self.register_buffer("codebook_offsets", offsets, persistent=False)

    @property
    def d_model(self) -> int:
        return self.gpt.config.n_embd

    @property
    def max_positions(self) -> int:
        return self.gpt.config.n_positions

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, L, Q]`` delayed tokens (0..1024) → ``[B, L, D]`` summed codebook embeddings."""
        return self.vocab_embed(tokens + self.codebook_offsets).sum(dim=2)

    def embed_prompt(self, prompt: torch.Tensor) -> torch.Tensor:
        """``[B, P]`` prompt vectors → ``[B, 1, D]`` (the input at position 0)."""
        x = prompt.to(self.vocab_embed.weight.dtype)
        if self.prompt_proj is not None:
            x = self.prompt_proj(x)
        return x[:, None, :]

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, L, D]`` last hidden states → ``[B, L, Q, 1025]`` logits."""
        logits = self.classification_head(hidden)
        return logits.view(*hidden.shape[:2], self.num_q, VOCAB_PER_CODEBOOK)

    def forward(
        self,
        prompt: torch.Tensor | None,
        tokens: torch.Tensor | None,
        past_key_values=None,
        use_cache: bool = False,
        last_only: bool = False,
    ):
        """Logits for ``[prompt?, tokens]``, optionally continuing a KV cache.

        Args:
            prompt: ``[B, P]`` or None (no prompt position, e.g. when continuing a cache).
            tokens: ``[B, L, Q]`` delayed tokens or None.
            past_key_values: a transformers cache to continue (positions continue from it).
            use_cache: return the updated cache as the second output.
            last_only: apply the head to the last position only (generation needs no more;
                the head is the widest layer, ``D × Q·1025``).

        Returns:
            ``logits [B, 1? + L, Q, 1025]`` (``[B, 1, Q, 1025]`` with ``last_only``) and the
            cache (None unless ``use_cache``).
        """
        parts = []
        if prompt is not None:
            parts.append(self.embed_prompt(prompt))
        if tokens is not None and tokens.shape[1] > 0:
            parts.append(self.embed_tokens(tokens))
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        out = self.gpt(inputs_embeds=x, past_key_values=past_key_values, use_cache=use_cache)
        hidden = out.last_hidden_state[:, -1:] if last_only else out.last_hidden_state
        return self.head(hidden), (out.past_key_values if use_cache else None)

    def training_logits(self, prompt: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The original training forward: ``[B, 1 + L, Q, 1025]`` for ``[prompt, tokens]``.

        ``tokens`` is ``[B, Q, L]`` in the delayed layout (as ``apply_delay`` returns it);
        the loss uses ``logits[:, :-1]`` against ``tokens``.
        """
        logits, _ = self(prompt, tokens.transpose(1, 2))
        return logits
