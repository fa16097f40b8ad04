"""Reading session folders, of every format version this release knows.

``session.json`` says what wrote the folder: ``"format": "encodecgpt-live-session"`` and the
format version:

1. Release 0 (key ``"version": 1``). ``state.pt`` pickles the generator state of release 0:
   numpy arrays and ``engine.lean.KVCache`` objects (a module that no longer exists);
   ``decoder_state.pt`` holds tensors, LSTM states as tuples. Read with torch's restricted
   (``weights_only``) unpickler, allowing exactly those classes (the KV cache mapped onto
   :class:`_LegacyKVCache`), and converted into the version 2 states.
2. Key ``"format_version": 2``. ``state.pt`` and ``decoder_state.pt`` are protocol states
   (:mod:`engine.live.state`: tensors, scalars, lists, dicts) and load with
   ``torch.load(..., weights_only=True)``.
3. The generator state gains ``compute``: the device its model and sampler ran on
   (``"cpu"``, ``"cuda:0"``; session.json's ``engine`` section says it too). Versions 1 and 2
   were always made on the CPU, and read as such.

Every later change to the folder's files bumps :data:`FORMAT_VERSION` and adds the reading
(and conversion) of the previous version here, so old sessions keep replaying
token-identically; a folder of a newer version than this release knows is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from engine.errors import UserError

FORMAT = "encodecgpt-live-session"
FORMAT_VERSION = 3


def read_session(folder: Path) -> dict:
    """``session.json`` of a session folder, its version checked.

    Raises:
        UserError: no session.json, unreadable, not a session, or a format version this
            release cannot read.
    """
    path = Path(folder) / "session.json"
    if not path.is_file():
        raise UserError(f"{folder}: not a session folder (no session.json)")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    if info.get("format") != FORMAT:
        raise UserError(f"{path}: not an encodecgpt-live session")
    session_version(info, path)
    return info


def session_version(info: dict, path: Path | str = "session.json") -> int:
    """The format version of a session (1 for release 0's ``"version": 1``).

    Raises:
        UserError: no version, or one newer than :data:`FORMAT_VERSION`.
    """
    version = info.get("format_version", 1 if info.get("version") == 1 else None)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path}: no valid format_version ({version!r})")
    if version > FORMAT_VERSION:
        raise UserError(f"{path}: session format_version {version} is newer than this "
                        f"release reads (1..{FORMAT_VERSION}); replay it with a newer "
                        "encodecgpt-live")
    return version


def load_generator_state(folder: Path, info: dict) -> dict:
    """``state.pt`` as a generator state (:meth:`RollingGenerator.set_state`)."""
    path = Path(folder) / "state.pt"
    version = session_version(info)
    if version == 1:
        state = _generator_state_v1(_load_v1(path), info["engine"]["num_q"])
    else:
        state = _load(path)
    if version < 3:
        state["compute"] = "cpu"
    return state


def load_decoder_state(folder: Path, info: dict) -> dict | None:
    """``decoder_state.pt`` as a decoder state, or None if the folder has none."""
    path = Path(folder) / "decoder_state.pt"
    if not path.is_file():
        return None
    state = _load(path)
    if session_version(info) == 1:
        state["layers"] = [list(v) if isinstance(v, tuple) else v for v in state["layers"]]
    return state


def _load(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, …
        raise UserError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


# -- version 1 ---------------------------------------------------------------------------

class _LegacyKVCache:
    """What release 0 pickled as ``engine.lean.KVCache``: attributes ``k``, ``v``,
    ``length``, restored by the unpickler (no code of it runs)."""

    k: torch.Tensor
    v: torch.Tensor
    length: int


# numpy's array rebuilder, wherever this numpy keeps it (numpy 2: numpy._core.multiarray).
_RECONSTRUCT = np.array(0).__reduce__()[0]

# The only globals a version 1 state.pt holds besides tensors: numpy arrays (control state and
# prompts, float32 and float64, pickled by numpy 2 or 1) and release 0's KV cache.
_V1_GLOBALS = [
    (_LegacyKVCache, "engine.lean.KVCache"),
    (_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
    np.ndarray, np.dtype, np.dtypes.Float32DType, np.dtypes.Float64DType,
]


def _load_v1(path: Path) -> dict:
    with torch.serialization.safe_globals(_V1_GLOBALS):
        return _load(path)


def _generator_state_v1(old: dict, num_q: int) -> dict:
    """Release 0's generator state → the version 2 state (same keys, plain values)."""
    state = _plain(old)
    history = state["history"]  # a list of [Q] rows
    state["history"] = (torch.stack(history) if history
                        else torch.zeros(0, num_q, dtype=torch.long))
    return state


def _plain(value):
    """numpy arrays → tensors (same dtype), legacy caches → KV cache states, recursively."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True))
    if isinstance(value, _LegacyKVCache):
        return {"k": value.k, "v": value.v, "length": int(value.length)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
