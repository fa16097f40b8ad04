"""A prompt argument → a prompt vector ``[P]`` float32: a ``.npy`` file or an audio file.

One rule for every place that takes a prompt (``render --prompt``, the live engine's
``--prompt`` slots and ``/prompt/load``): ``.npy`` files are read as vectors (``[T, D]``
frames are averaged over time), anything else is embedded with EnCodecMAE, which is loaded
on first use only (a session that never embeds audio never loads it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.errors import UserError


def load_prompt_npy(path: Path) -> np.ndarray:
    """A ``.npy`` prompt: ``[D]`` (or ``[T, D]`` frames, averaged) finite floats → ``[D]``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected a prompt .npy or an audio file)")
    try:
        vec = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable .npy file ({e})") from None
    if vec.ndim == 2 and vec.shape[0] >= 1:
        vec = vec.mean(axis=0)  # [T, D] frames (embed --frames) -> their time mean
    if vec.ndim != 1 or not np.issubdtype(vec.dtype, np.floating):
        raise UserError(f"{path}: expected a float vector [D], got {vec.dtype} {list(vec.shape)}")
    if not np.isfinite(vec).all():
        raise UserError(f"{path}: prompt holds NaN or infinite values")
    return vec.astype(np.float32)


class PromptReader:
    """Reads prompt arguments; audio files go through a lazily built EnCodecMAE.

    Args:
        encoder_factory: builds the EnCodecMAE (``.prompt(path) -> [P]``) on first use, or
            None where only ``.npy`` prompts are allowed.
        expected_dim: the model's prompt size; a vector of another size is refused.
        max_seconds: embed only an audio file's first seconds (the live engine: a long song
            dropped on a slot must not compete with generation for minutes); None = all.
    """

    def __init__(self, encoder_factory: Callable[[], object] | None,
                 expected_dim: int | None = None, max_seconds: float | None = None):
        self._factory = encoder_factory
        self._encoder = None
        self.expected_dim = expected_dim
        self.max_seconds = max_seconds

    def read(self, path: str | Path) -> np.ndarray:
        """``path`` → ``[P]`` float32 (raises :class:`UserError` with the file's name)."""
        path = Path(path)
        if path.suffix.lower() == ".npy":
            vec = load_prompt_npy(path)
        else:
            vec = (self.encoder.prompt(path) if self.max_seconds is None
                   else self.encoder.prompt(path, max_seconds=self.max_seconds))
        if self.expected_dim is not None and vec.shape[0] != self.expected_dim:
            raise UserError(f"{path}: prompt has {vec.shape[0]} values, the model expects "
                            f"{self.expected_dim} (use the EnCodecMAE the model was trained "
                            "with)")
        return vec

    @property
    def encoder(self):
        if self._encoder is None:
            if self._factory is None:
                raise UserError("no EnCodecMAE available to embed audio files")
            self._encoder = self._factory()
        return self._encoder
