"""The MusicGen decoder as the engine runs it: last-position logits over delayed token rows.

**Rows.** The engine's rows are delayed tokens in its own convention (code + 1, 0 = empty;
:mod:`engine.model.tokens.patterns`), one row per step, ``[K]`` each. MusicGen's decoder reads
column ``0`` = the start token (``decoder_start_token_id`` = pad = 2048 in every codebook),
then column ``t + 1`` = row ``t`` with empty as the pad token. With ``K = 4`` and frames
``a, b, c, …`` (subscript = codebook; P = pad)::

    decoder columns   0  1  2  3  4  5
    codebook 0        P  a0 b0 c0 d0 e0
    codebook 1        P  P  a1 b1 c1 d1
    codebook 2        P  P  P  a2 b2 c2
    codebook 3        P  P  P  P  a3 b3

Row ``t`` (column ``t + 1``) is predicted from columns ``0..t``; its codebooks ``k > t`` are
the start triangle, forced empty (as transformers' ``build_delay_pattern_mask`` forces them to
pad). A rolling window of the last ``W`` rows re-creates that triangle at its start and
restarts the positions at 0 — what audiocraft does when it continues beyond 30 s (the kept
frames are re-laid out with a fresh start).

**Positions.** Sinusoidal, from 0 at the start column; a window never holds more than
``max_position_embeddings - 1`` rows.
"""

from __future__ import annotations

import warnings

import torch
from transformers import DynamicCache, EncoderDecoderCache, MusicgenForConditionalGeneration

from engine.model.musicgen.guidance import ConditionBatch
from engine.model.tokens.patterns import start_triangle_mask

# transformers 5.x renames the decoder's `past_key_values` argument (the old name still works
# there, with a FutureWarning on every live step's first call); older releases take only it
warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated",
                        category=FutureWarning)


class MusicGenLM:
    """Last-position logits of a MusicGen decoder over a window of rows.

    Args:
        model: the loaded MusicGen (its ``decoder`` is run; text and audio encoders are not).
    """

    def __init__(self, model: MusicgenForConditionalGeneration):
        self.model = model
        self.causal = model.decoder  # MusicgenForCausalLM: the decoder and its lm_heads
        cfg = model.decoder.config
        self.num_q = cfg.num_codebooks
        self.card = cfg.vocab_size  # 2048 codes per codebook
        self.pad = int(model.generation_config.decoder_start_token_id
                       if model.generation_config.decoder_start_token_id is not None
                       else cfg.pad_token_id)
        self.max_positions = cfg.max_position_embeddings
        self.triangle = start_triangle_mask(self.num_q, self.num_q)  # [K, K] True = empty
        self.text = None  # its TextEncoder, set by the loader (engine.model.loading.family)

    @property
    def device(self) -> torch.device:
        return next(self.causal.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.causal.parameters()).dtype

    def columns(self, rows: torch.Tensor, fresh_start: bool) -> torch.Tensor:
        """Decoder input ``[K, T + 1]`` for engine rows ``[T, K]``.

        Args:
            rows: delayed rows (code + 1, 0 = empty).
            fresh_start: re-create the start triangle (a window that does not begin at its
                sequence's start).
        """
        rows = rows.long().clone()
        if fresh_start and rows.shape[0]:
            n = min(rows.shape[0], self.num_q)
            rows[:n].masked_fill_(self.triangle[:n], 0)
        tokens = torch.where(rows > 0, rows - 1, torch.full_like(rows, self.pad))  # [T, K]
        start = torch.full((1, self.num_q), self.pad, dtype=torch.long)
        return torch.cat([start, tokens]).T.contiguous()  # [K, T + 1]

    def new_cache(self) -> EncoderDecoderCache:
        """An empty KV cache (self- and cross-attention) for :meth:`logits`."""
        cfg = self.causal.config
        return EncoderDecoderCache(DynamicCache(config=cfg), DynamicCache(config=cfg))

    @torch.inference_mode()
    def logits(self, columns: torch.Tensor, batch: ConditionBatch,
               cache: EncoderDecoderCache | None = None) -> torch.Tensor:
        """Logits of the column after ``columns``, for every row of ``batch``.

        Args:
            columns: ``[K, L]`` decoder tokens (0..card-1, pad = start token): the whole
                window, or with ``cache`` only the columns not yet in it.
            batch: the cross-attention inputs (``B`` rows), same for every call of a cache.
            cache: a KV cache that holds the earlier columns (updated in place), or None.

        Returns:
            ``[B, K, card]`` float32 logits.
        """
        b, (k, length) = batch.size, columns.shape
        ids = columns.to(self.device)[None].expand(b, k, length).reshape(b * k, length)
        hidden = self.causal.model.decoder(
            input_ids=ids, encoder_hidden_states=batch.hidden.to(self.device, self.dtype),
            encoder_attention_mask=batch.mask.to(self.device), past_key_values=cache,
            use_cache=cache is not None).last_hidden_state[:, -1]  # [B, D]
        return torch.stack([head(hidden) for head in self.causal.lm_heads], dim=1).float()
