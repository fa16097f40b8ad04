"""The token cache as training and validation batches.

Batches are a pure function of ``(seed, micro-batch number, rank)``: sample number ``g``
takes clip ``perm_e[g mod n]`` of epoch ``e = g div n`` (a seeded permutation) and a
seeded crop start. Resuming at optimizer step ``s`` restarts the stream at micro-batch
``s · accumulate``, so a resumed run sees exactly the batches the uninterrupted run saw.

One batch (:func:`collate`)::

    prompts [B, P] float32
    tokens  [B, Q, L] int64   delayed codes (+1, 0 = empty), zero-padded to the longest
    targets [B, Q, L] int64   = tokens, with -100 (ignored) past each clip's own end

The rotary recipe's batch (:func:`collate_flat`) flattens instead of delaying.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.model.tokens.patterns import apply_delay, flatten_codes
from engine.train.data.cache import load_shards, read_index

IGNORE = -100


class TokenClips:
    """All clips of a cache in memory, split into train and validation by clip id."""

    def __init__(self, folder: str | Path, val_fraction: float = 0.02, max_val: int = 1000):
        self.folder = Path(folder)
        self.index = read_index(folder)
        self.codes, self.offsets, self.prompts, self.ids = load_shards(folder, self.index)
        self.train, self.val = _split(self.ids, val_fraction, max_val)

    @property
    def num_q(self) -> int:
        return self.codes.shape[1]

    @property
    def prompt_dim(self) -> int:
        return self.prompts.shape[1]

    def clip(self, i: int, start: int = 0, frames: int | None = None) -> np.ndarray:
        """Codes ``[Q, T]`` of clip ``i`` from frame ``start`` (at most ``frames``)."""
        a, b = self.offsets[i] + start, self.offsets[i + 1]
        if frames is not None:
            b = min(b, a + frames)
        return self.codes[a:b].T

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])


def _split(ids: list[str], val_fraction: float, max_val: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation = the clips whose id hashes lowest (stable as the cache grows)."""
    n = len(ids)
    want = min(max_val, int(round(n * val_fraction))) if n > 1 else 0
    if val_fraction > 0 and n > 1:
        want = max(want, 1)
    order = np.argsort([_id_hash(s) for s in ids], kind="stable")
    val = np.sort(order[:want])
    train = np.sort(order[want:])
    return train, val


def _id_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little")


class CropDataset(Dataset):
    """Item ``(clip, start)`` → ``(codes [Q, T], prompt [P])`` with ``T <= frames``."""

    def __init__(self, clips: TokenClips, frames: int):
        self.clips, self.frames = clips, frames

    def __getitem__(self, item: tuple[int, int]):
        i, start = item
        return (torch.from_numpy(self.clips.clip(i, start, self.frames).astype(np.int64)),
                torch.from_numpy(self.clips.prompts[i]))


class StepBatches:
    """Infinite batch sampler over ``clip_ids``; starts at micro-batch ``start_fn()``.

    Each rank of ``world`` draws its own ``batch_size`` samples per micro-batch.
    """

    def __init__(self, clips: TokenClips, clip_ids: np.ndarray, frames: int, batch_size: int,
                 seed: int, rank: int = 0, world: int = 1, start_fn=lambda: 0):
        self.clips, self.ids, self.frames = clips, clip_ids, frames
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.start_fn = start_fn

    def batch(self, micro: int) -> list[tuple[int, int]]:
        first = (micro * self.world + self.rank) * self.batch_size
        return [self._sample(g) for g in range(first, first + self.batch_size)]

    def _sample(self, g: int) -> tuple[int, int]:
        n = len(self.ids)
        epoch, pos = divmod(g, n)
        clip = int(self.ids[np.random.default_rng([self.seed, epoch]).permutation(n)[pos]])
        spare = max(0, self.clips.length(clip) - self.frames)
        start = int(np.random.default_rng([self.seed, epoch, pos, 1]).integers(0, spare + 1))
        return clip, start

    def __iter__(self):
        micro = self.start_fn()
        while True:
            yield self.batch(micro)
            micro += 1


def val_batches(clips: TokenClips, batch_size: int) -> list[list[tuple[int, int]]]:
    """Validation: each held-out clip once, from its start, in a fixed order."""
    ids = [(int(i), 0) for i in clips.val]
    return [ids[s : s + batch_size] for s in range(0, len(ids), batch_size)]


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Delay each clip, pad to the longest, ignore the padding in the targets."""
    num_q = items[0][0].shape[0]
    width = max(c.shape[1] for c, _ in items) + num_q - 1
    tokens = torch.zeros(len(items), num_q, width, dtype=torch.long)
    targets = torch.full_like(tokens, IGNORE)
    for b, (codes, _) in enumerate(items):
        delayed = apply_delay(codes[None])[0]
        tokens[b, :, : delayed.shape[1]] = delayed
        targets[b, :, : delayed.shape[1]] = delayed
    return {"prompts": torch.stack([p for _, p in items]), "tokens": tokens, "targets": targets}


def collate_flat(items: list[tuple[torch.Tensor, torch.Tensor]], num_q: int,
                 start_token: int) -> dict[str, torch.Tensor]:
    """The rotary recipe's batch: each clip's first ``num_q`` codebooks flattened frame by
    frame (:func:`~engine.model.tokens.patterns.flatten_codes`) after a start token, padded
    to the longest; the targets ignore the padding.

    Returns:
        ``tokens [B, 1 + num_q·T]`` int64 and ``targets`` (the same, -100 past each end).
    """
    width = 1 + num_q * max(c.shape[1] for c, _ in items)
    tokens = torch.full((len(items), width), start_token, dtype=torch.long)
    targets = torch.full_like(tokens, IGNORE)
    for b, (codes, _) in enumerate(items):
        flat = flatten_codes(codes[None, :num_q])[0]
        row = torch.cat([torch.tensor([start_token]), flat])
        tokens[b, : row.shape[0]] = row
        targets[b, : row.shape[0]] = row
    return {"tokens": tokens, "targets": targets}
