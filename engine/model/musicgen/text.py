"""Text conditioning: a text → the cross-attention input the decoder sees, cached by text.

Exactly what ``MusicgenForConditionalGeneration`` computes for one text: the tokenizer's ids
and attention mask, the T5 encoder's last hidden state, the ``enc_to_dec_proj`` projection
(when T5's width differs from the decoder's), then masked (``hidden * mask``). The
*unconditional* input of classifier-free guidance is zeros with an all-zero mask (transformers
concatenates ``zeros_like`` of the T5 states; projected and masked they are zeros).

Threading: :meth:`TextEncoder.encode` may be called from any thread (a worker computes a new
slot's encoding while the generator plays; the cache has a lock, T5 runs outside it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
from transformers import MusicgenForConditionalGeneration

CACHE_TEXTS = 64  # encodings kept (a show's text slots, several times over)


@dataclass(frozen=True)
class TextCondition:
    """One text's cross-attention input.

    Attributes:
        text: the text ("" for the unconditional input).
        hidden: ``[S, D]`` float32, projected to the decoder width and masked.
        mask: ``[S]`` int64, 1 = a token, 0 = padding (all 0: unconditional).
    """

    text: str
    hidden: torch.Tensor
    mask: torch.Tensor


def unconditional(width: int, length: int = 1) -> TextCondition:
    """The null condition of classifier-free guidance: ``[length, width]`` zeros, mask 0."""
    return TextCondition("", torch.zeros(length, width), torch.zeros(length, dtype=torch.long))


class TextEncoder:
    """T5 + projection of a MusicGen, with an LRU cache of :data:`CACHE_TEXTS` texts.

    Args:
        model: the loaded MusicGen (its ``text_encoder`` and ``enc_to_dec_proj`` are used).
        tokenizer: its text tokenizer.
    """

    def __init__(self, model: MusicgenForConditionalGeneration, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        has_proj = getattr(model, "enc_to_dec_proj", None) is not None
        self.width = (model.decoder.config.hidden_size if has_proj
                      else model.config.text_encoder.hidden_size)  # what cross-attention reads
        self._cache: OrderedDict[str, TextCondition] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, text: str) -> TextCondition | None:
        """The encoding of ``text`` if it is cached, else None (never computes)."""
        with self._lock:
            found = self._cache.get(text)
            if found is not None:
                self._cache.move_to_end(text)
            return found

    def encode(self, text: str) -> TextCondition:
        """The encoding of ``text`` (computed once, then cached)."""
        found = self.cached(text)
        if found is not None:
            return found
        condition = self._compute(text)
        with self._lock:
            self._cache[text] = condition
            while len(self._cache) > CACHE_TEXTS:
                self._cache.popitem(last=False)
        return condition

    @torch.inference_mode()
    def _compute(self, text: str) -> TextCondition:
        inputs = self.tokenizer(text, return_tensors="pt")
        ids, mask = inputs["input_ids"], inputs["attention_mask"]  # [1, S]
        device = next(self.model.text_encoder.parameters()).device
        hidden = self.model.text_encoder(input_ids=ids.to(device),
                                         attention_mask=mask.to(device)).last_hidden_state
        proj = getattr(self.model, "enc_to_dec_proj", None)
        if proj is not None:
            hidden = proj(hidden)  # [1, S, D_t5] -> [1, S, D]
        hidden = hidden * mask.to(hidden)[..., None]
        return TextCondition(text, hidden[0].float().cpu(), mask[0].long())
