"""Which tokens the rotary model's rolling window holds.

The model was trained on ``[start token, up to max_seq_len - 1 tokens]`` starting on a frame
(codebook 0). The window keeps the start token at its head (an attention sink, as in
StreamingLLM) and at most ``W - 1`` tokens after it, and slides by whole frames so that it
always starts on codebook 0: with ``Q = 2`` and ``W = 6`` (tokens numbered from 0, frame
``f`` = tokens ``2f, 2f + 1``)::

    tokens so far     window after the start token
    0..4              0 1 2 3 4          (5 = W - 1 tokens)
    0..5              2 3 4 5            (one frame dropped: 6 would exceed W - 1)
    0..6              2 3 4 5 6
"""

from __future__ import annotations


def window_start(count: int, keep: int, num_q: int) -> int:
    """Index of the first token in the window when ``count`` tokens exist.

    Args:
        count: tokens generated or primed so far (without the start token).
        keep: the most tokens after the start token (``W - 1``).
        num_q: codebooks per frame.

    Returns:
        The smallest multiple of ``num_q`` that leaves at most ``keep`` tokens.
    """
    need = max(0, count - keep)
    return -(-need // num_q) * num_q
