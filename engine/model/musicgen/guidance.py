"""Classifier-free guidance over several text slots: the batch, and the mixing rule.

MusicGen samples from ``uncond + g·(cond − uncond)`` on the logits (transformers'
``ClassifierFreeGuidanceLogitsProcessor``; audiocraft's ``cfg_coef``), with the unconditional
row computed from an all-masked (null) text. With several slots of weights ``wᵢ`` (``Σ wᵢ = 1``)
the rule here is::

    logits = uncond + g · (Σᵢ wᵢ · condᵢ − uncond)

— the guided logits of a mixed conditional *score*: continuous (linear) in the weights and in
``g``, and at a corner (one weight 1) exactly single-prompt MusicGen. The active slots
(``wᵢ > 0``) and the null row run as one batch ``[uncond, cond₁ … condₙ]``; with ``g = 1`` the
null row is not computed (as transformers skips CFG for ``guidance_scale <= 1``), and for
``g < 1`` the rule moves towards the unconditional model.

Texts of different lengths are padded to the longest with mask 0; a masked key gets no
attention weight, so padding changes no value beyond float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.model.musicgen.text import TextCondition, unconditional


@dataclass
class ConditionBatch:
    """Cross-attention inputs of one forward pass.

    Attributes:
        hidden: ``[B, S, D]`` float32 (row 0 the null condition when ``guided``).
        mask: ``[B, S]`` int64.
        weights: ``[N]`` float64 mixing weights of the ``N`` conditional rows.
        guided: whether row 0 is the unconditional input.
    """

    hidden: torch.Tensor
    mask: torch.Tensor
    weights: torch.Tensor
    guided: bool

    @property
    def size(self) -> int:
        return self.hidden.shape[0]

    def to(self, device: torch.device, dtype: torch.dtype) -> ConditionBatch:
        return ConditionBatch(self.hidden.to(device, dtype), self.mask.to(device),
                              self.weights, self.guided)


def uses_null(guidance: float) -> bool:
    """Whether ``guidance`` needs the unconditional row (``g != 1``)."""
    return guidance != 1.0


def condition_batch(conditions: list[TextCondition], weights: list[float],
                    guidance: float, width: int) -> ConditionBatch:
    """The batch ``[uncond?, cond₁ … condₙ]`` padded to the longest text.

    Args:
        conditions: the active slots' encodings (weight > 0), in slot order.
        weights: their weights (normalised here to sum 1).
        guidance: the CFG scale ``g``.
        width: the cross-attention width ``D`` (for the null row).
    """
    if not conditions or len(conditions) != len(weights):
        raise ValueError("need one weight per condition, at least one condition")
    rows = ([unconditional(width)] if uses_null(guidance) else []) + list(conditions)
    length = max(c.hidden.shape[0] for c in rows)
    hidden = torch.zeros(len(rows), length, width)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, c in enumerate(rows):
        hidden[i, : c.hidden.shape[0]] = c.hidden
        mask[i, : c.mask.shape[0]] = c.mask
    w = torch.tensor(weights, dtype=torch.float64)
    return ConditionBatch(hidden, mask, w / w.sum(), uses_null(guidance))


def guided_logits(logits: torch.Tensor, batch: ConditionBatch, guidance: float) -> torch.Tensor:
    """Apply the mixing rule to a batch's logits.

    Args:
        logits: ``[B, K, V]`` rows in the order of ``batch``.
        batch: the batch they were computed from.
        guidance: ``g``.

    Returns:
        ``[K, V]`` float32 guided logits.
    """
    cond = logits[1:] if batch.guided else logits  # [N, K, V]
    if cond.shape[0] == 1:  # a corner: the single prompt, no weighted sum at all
        mixed = cond[0].float()
    else:
        w = batch.weights.to(cond.device, torch.float32)
        mixed = (w[:, None, None] * cond.float()).sum(0)
    if not batch.guided:
        return mixed
    uncond = logits[0].float()
    return uncond + (mixed - uncond) * guidance
