"""Drawing one frame of tokens on the device, with no host sync and no data-dependent shape.

The same sampler as :mod:`engine.model.sampling` (temperature, top-k, top-p, greedy), with two
changes so a step can be captured in a CUDA graph and replayed while the controls move:

* the settings are **0-d device tensors** (:class:`DeviceSampling`), so a control change is a
  ``fill_``, never a new graph and never a Python branch on a device value;
* the draw is the **exponential race** instead of ``torch.multinomial`` (which cannot be
  captured): with ``E_i ~ Exp(1)`` independent, ``argmax_i p_i / E_i`` is token ``i`` with
  probability ``p_i`` (``E_i / p_i ~ Exp(p_i)`` and the smallest of independent exponentials is
  ``i`` with probability ``p_i / Σ p``). The noise is drawn by :func:`draw_noise` from a seeded
  generator on the device.

The filters are the CPU sampler's, op for op: top-k drops scores strictly below the k-th
largest (ties with it are kept; ``k <= 0`` or ``k >= V`` keeps all), top-p sorts the top-k
survivors with the same ``torch.sort`` call and keeps the smallest set of top tokens whose
mass reaches ``p`` (``p >= 1`` keeps all). On the CPU the masks are bit-identical to
:func:`engine.model.sampling.filter_top_k` / :func:`~engine.model.sampling.filter_top_p`.
On CUDA, tied scores that straddle the nucleus boundary keep whichever tied index the
device's sort puts first, as the CPU's sort decides it there. The CPU engine keeps
:func:`engine.model.sampling.sample_frame` (its seeded runs and the goldens do not change);
the tokens drawn here follow the same distribution, not the same random stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The smallest positive float32: noise is clamped to it so that ``0 / 0`` (a dropped token
# meeting a zero draw) can never be NaN, which argmax would pick.
_TINY = torch.finfo(torch.float32).tiny


@dataclass
class DeviceSampling:
    """The sampling settings as 0-d tensors on the device the step runs on.

    A captured graph reads these addresses on every replay; :meth:`set` writes new values in
    place, so a control change needs no recapture.
    """

    temperature: torch.Tensor  # 0-d float32; <= 0 means greedy
    top_k: torch.Tensor  # 0-d int64; 0 = off
    top_p: torch.Tensor  # 0-d float32; 1.0 = off
    greedy: torch.Tensor  # 0-d bool

    @classmethod
    def on(cls, device: torch.device | str) -> DeviceSampling:
        """Settings at their defaults (temperature 1, no top-k, no top-p, sampled)."""
        return cls(
            temperature=torch.ones((), device=device),
            top_k=torch.zeros((), dtype=torch.long, device=device),
            top_p=torch.ones((), device=device),
            greedy=torch.zeros((), dtype=torch.bool, device=device),
        )

    def set(self, temperature: float, top_k: int, top_p: float, greedy: bool) -> None:
        """Write new values in place (``fill_`` launches a kernel; it does not sync)."""
        self.temperature.fill_(temperature)
        self.top_k.fill_(top_k)
        self.top_p.fill_(top_p)
        self.greedy.fill_(greedy)


def drop_top_k(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Where top-k drops a score: below the k-th largest of its row.

    Args:
        scores: ``[..., V]`` float.
        k: 0-d int64 tensor; ``k <= 0`` or ``k >= V`` drops nothing.

    Returns:
        ``[..., V]`` bool, True = dropped.
    """
    v = scores.shape[-1]
    descending = torch.sort(scores, dim=-1, descending=True).values
    index = (k - 1).clamp(0, v - 1).expand(*scores.shape[:-1], 1)
    kth = descending.gather(-1, index)  # [..., 1] the k-th largest value, ties counted
    active = (k > 0) & (k < v)
    return (scores < kth) & active


def drop_top_p(scores: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Where top-p (nucleus) drops a score: every token after the smallest set of top
    tokens whose probability reaches ``p`` (the best token is always kept).

    Args:
        scores: ``[..., V]`` float (already top-k filtered: dropped entries are ``-inf``).
        p: 0-d float32 tensor; ``p >= 1`` drops nothing.

    Returns:
        ``[..., V]`` bool, True = dropped.
    """
    sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
    probs = sorted_scores.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of strictly better tokens
    drop_sorted = before >= p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return drop & (p < 1.0)


def filtered_scores(logits: torch.Tensor, settings: DeviceSampling) -> torch.Tensor:
    """Temperature, then top-k, then top-p: ``[..., V]`` float32 scores, dropped = ``-inf``.

    A temperature ``<= 0`` divides by 1 instead (the result is unused: that is greedy).
    """
    t = settings.temperature
    scores = logits.float() / torch.where(t > 0.0, t, torch.ones_like(t))
    scores = scores.masked_fill(drop_top_k(scores, settings.top_k), float("-inf"))
    return scores.masked_fill(drop_top_p(scores, settings.top_p), float("-inf"))


def draw_noise(noise: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Fill ``noise [..., V]`` in place with Exp(1) draws (the race's randomness)."""
    return noise.exponential_(generator=generator)


def sample_on_device(logits: torch.Tensor, settings: DeviceSampling,
                     noise: torch.Tensor) -> torch.Tensor:
    """One token per row, all on the device.

    Args:
        logits: ``[..., Q, V]`` (V = 1025: class 0 = empty, class j+1 = code j).
        settings: the 0-d settings (greedy or temperature ``<= 0``: argmax of the logits,
            the first maximal index, as the CPU sampler).
        noise: ``[..., Q, V]`` float32 Exp(1) draws from :func:`draw_noise`.

    Returns:
        ``[..., Q]`` int64 tokens.
    """
    probs = filtered_scores(logits, settings).softmax(dim=-1)
    raced = (probs / noise.clamp_min(_TINY)).argmax(dim=-1)
    greedy = settings.greedy | (settings.temperature <= 0.0)
    return torch.where(greedy, logits.argmax(dim=-1), raced)
