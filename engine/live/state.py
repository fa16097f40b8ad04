"""The state protocol of everything that streams (audiocraft's idea, one verb pair).

An object whose next output depends on what it has seen (the rolling generator, its control
state, a KV cache, the streaming decoder) has exactly two methods for it:

* ``get_state() -> dict`` — a copy of everything the next output depends on;
* ``set_state(state: dict)`` — continue from such a state, on an object built with the same
  arguments: the next outputs are then identical to the original's.

A state holds only torch tensors, Python scalars, ``str``, ``None``, lists and dicts (another
object's state nests as a dict), so ``torch.save`` writes it and
``torch.load(path, weights_only=True)`` reads it back without running any pickled code. Values
are converted at the boundary: numpy arrays become tensors of the same dtype (float64 mix
weights stay float64, so a restored run is bit-identical).

``set_state`` reads the state through a :class:`StateReader`: every key must be present and
every key must be used, so a state from another version of an object is refused with a
``ValueError`` naming the keys instead of being half applied.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


class StateReader:
    """Read a state dict key by key; on leaving the ``with`` block, unused keys are an error.

    Example::

        with StateReader(state, "KV cache") as s:
            k, v, length = s.pop("k"), s.pop("v"), s.pop("length")
        # only now change the object: a refused state has changed nothing

    Args:
        state: the dict given to ``set_state``.
        owner: what the state belongs to, for the error messages.

    Raises:
        ValueError: the state is not a dict, a key is missing (from :meth:`pop`), or keys
            were left unused (on leaving the block).
    """

    def __init__(self, state: Mapping, owner: str):
        if not isinstance(state, Mapping):
            raise ValueError(f"{owner} state must be a dict, got {type(state).__name__}")
        self.owner = owner
        self._left = dict(state)

    def pop(self, key: str):
        """The value of ``key``; raises ``ValueError`` if the state has none."""
        try:
            return self._left.pop(key)
        except KeyError:
            raise ValueError(f"{self.owner} state: missing state key {key!r}") from None

    def __enter__(self) -> StateReader:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None and self._left:
            raise ValueError(f"{self.owner} state: unused state keys: "
                             f"{', '.join(map(repr, sorted(self._left)))}")
        return False


def array_to_state(array: np.ndarray | None) -> torch.Tensor | None:
    """A numpy array as a tensor of the same dtype (a copy); ``None`` stays ``None``."""
    return None if array is None else torch.from_numpy(np.array(array, copy=True))


def array_from_state(tensor: torch.Tensor | None) -> np.ndarray | None:
    """The inverse of :func:`array_to_state` (a copy, so the state can be used again)."""
    return None if tensor is None else tensor.numpy().copy()
