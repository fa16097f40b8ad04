"""The MusicGen delay pattern, exactly as EnCodecGPT trains on it.

Codebook ``k`` is delayed by ``k`` frames and every code is shifted by +1 so that 0 can mean
"empty" (a position outside the pattern). With Q = 3 codebooks and T = 4 frames ``a..d``
(subscript = codebook)::

    codes [Q, T]          delayed tokens [Q, T + Q - 1]   (x = code x + 1, . = 0 = empty)
    a0 b0 c0 d0           a0 b0 c0 d0 .  .
    a1 b1 c1 d1    -->    .  a1 b1 c1 d1 .
    a2 b2 c2 d2           .  .  a2 b2 c2 d2

Column ``t`` of the delayed layout is what the language model predicts at step ``t``; frame
``t`` is complete once column ``t + Q - 1`` is known.

Reference quirk: ``encodecgpt2.unapply_delay_pattern`` rolls circularly and then drops ``Q``
trailing columns, where ``Q - 1`` would be expected, so a ``[B, 8, 307]`` input gives 299
frames instead of 300 (and the blog's generation drops the last 8 rows before decoding).
:func:`undelay` here returns every complete frame (``L - Q + 1`` of them) and never wraps.
"""

from __future__ import annotations

import torch

from engine.model.config import EMPTY_TOKEN


def apply_delay(codes: torch.Tensor) -> torch.Tensor:
    """Codes to delayed tokens.

    Args:
        codes: ``[B, Q, T]`` integer codes in ``[0, 1024)``.

    Returns:
        ``[B, Q, T + Q - 1]`` tokens: ``out[b, k, t] = codes[b, k, t - k] + 1`` for
        ``k <= t <= T - 1 + k``, else 0.
    """
    b, q, t = codes.shape
    out = codes.new_full((b, q, t + q - 1), EMPTY_TOKEN)
    for k in range(q):
        out[:, k, k : k + t] = codes[:, k] + 1
    return out


def undelay(tokens: torch.Tensor) -> torch.Tensor:
    """Delayed tokens back to frame-aligned tokens (still +1, 0 = empty).

    Args:
        tokens: ``[B, Q, L]`` delayed tokens, ``L >= Q``.

    Returns:
        ``[B, Q, L - Q + 1]``: ``out[b, k, t] = tokens[b, k, t + k]``.
    """
    b, q, length = tokens.shape
    if length < q:
        raise ValueError(f"need at least {q} delayed columns to undelay, got {length}")
    t = length - q + 1
    return torch.stack([tokens[:, k, k : k + t] for k in range(q)], dim=1)


def tokens_to_codes(tokens: torch.Tensor) -> torch.Tensor:
    """Remove the +1 offset; an empty token (0) becomes code 0, as the reference decodes it."""
    return (tokens - 1).clamp_min(0)


def start_triangle_mask(window: int, num_q: int) -> torch.Tensor:
    """Where a window of delayed rows must be forced empty to look like a sequence start.

    The rolling-window generator (``gen_utils.generate_interp``) keeps the last ``window`` rows
    and zeroes codebooks ``k+1..Q-1`` of row ``k`` for ``k < Q - 1``, re-creating the empty
    triangle the model saw at the start of every training sequence.

    Returns:
        ``[window, Q]`` bool, True where the token is set to empty.
    """
    rows = torch.arange(window)[:, None]
    cols = torch.arange(num_q)[None, :]
    return cols > rows


class StreamingUndelay:
    """Delayed rows in, complete frames out: the streaming form of :func:`undelay`.

    Frame ``f`` is complete once row ``f + Q - 1`` has arrived (its last codebook);
    :meth:`push` then returns its codes ``[Q]`` (``tokens_to_codes`` applied), else None.
    """

    def __init__(self, num_q: int):
        self.num_q = num_q
        self.rows: list[torch.Tensor] = []

    def push(self, row: torch.Tensor) -> torch.Tensor | None:
        self.rows.append(row)
        if len(self.rows) < self.num_q:
            return None
        if len(self.rows) > self.num_q:
            self.rows.pop(0)
        frame = torch.stack([self.rows[k][k] for k in range(self.num_q)])
        return tokens_to_codes(frame)


PATTERNS = ("delay", "flatten")


def flatten_codes(codes: torch.Tensor) -> torch.Tensor:
    """Codes to one flat token stream, frame by frame (the NSynth-guitar tutorial's layout).

    No offset is added: token value = code value, and the tutorial's start token 0 is a
    separate position in front (it shares its value with code 0, as in the recipe).
    With Q = 2 codebooks and T = 3 frames ``a..c`` (subscript = codebook)::

        codes [Q, T]          flat tokens [Q * T]
        a0 b0 c0      -->     a0 a1 b0 b1 c0 c1
        a1 b1 c1

    Token ``i`` holds codebook ``i % Q`` of frame ``i // Q``; a frame is complete once its
    last codebook (``i % Q == Q - 1``) is known.

    Args:
        codes: ``[B, Q, T]`` integer codes.

    Returns:
        ``[B, Q * T]``: ``out[b, t * Q + k] = codes[b, k, t]``.
    """
    b, q, t = codes.shape
    return codes.transpose(1, 2).reshape(b, t * q)  # [B, T, Q] -> [B, T*Q]


def unflatten_tokens(tokens: torch.Tensor, num_q: int) -> torch.Tensor:
    """Flat tokens back to codes: the inverse of :func:`flatten_codes`.

    A trailing, unfinished frame (fewer than ``num_q`` tokens) is dropped.

    Args:
        tokens: ``[B, L]`` flat tokens starting on codebook 0 (no start token).
        num_q: codebooks per frame.

    Returns:
        ``[B, Q, L // Q]`` codes.
    """
    b, length = tokens.shape
    t = length // num_q
    return tokens[:, : t * num_q].reshape(b, t, num_q).transpose(1, 2)  # [B, Q, T]


class StreamingUnflatten:
    """Flat tokens in, complete frames out: the streaming form of :func:`unflatten_tokens`.

    :meth:`push` takes one token (codebook ``i % Q`` of the current frame) and returns the
    frame's codes ``[Q]`` when its last codebook arrives, else None.
    """

    def __init__(self, num_q: int):
        self.num_q = num_q
        self.pending: list[int] = []

    def push(self, token: int) -> torch.Tensor | None:
        self.pending.append(int(token))
        if len(self.pending) < self.num_q:
            return None
        frame = torch.tensor(self.pending, dtype=torch.long)
        self.pending = []
        return frame

    def reset(self) -> None:
        """Forget a half-received frame (the window was re-primed on a frame boundary)."""
        self.pending = []
