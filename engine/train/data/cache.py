"""The token cache on disk: shards of EnCodec codes and prompt vectors, and an index.

Layout of ``CACHE/``::

    plan.json                 what was asked (source, kind, crop rule, codec, EnCodecMAE,
                              shard size, the file list's digest): a resume must match it
    shards/shard-00012.npz    codes int16 [sum T, Q], offsets int64 [n + 1],
                              prompts float32 [n, P]
    shards/shard-00012.json   per clip: id, file, start and length (s); skipped files with
                              the reason; written last, so it marks the shard as finished
    index.json                shards with clip and frame counts, totals, skipped count

Clip ``i`` of a shard is ``codes[offsets[i]:offsets[i + 1]].T`` (``[Q, T]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import FRAME_RATE
from engine.atomic_write import atomic_write, write_json_atomic
from engine.errors import UserError

CACHE_FORMAT = "encodecgpt-live-token-cache/1"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


@dataclass
class ShardResult:
    """One finished shard: its clips (arrays + metadata) and the files it skipped."""

    codes: list[np.ndarray] = field(default_factory=list)  # each [T, Q] int16
    prompts: list[np.ndarray] = field(default_factory=list)  # each [P] float32
    clips: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def add(self, codes_tq: np.ndarray, prompt: np.ndarray, meta: dict) -> None:
        self.codes.append(codes_tq.astype(np.int16))
        self.prompts.append(prompt.astype(np.float32))
        self.clips.append(meta)


def shard_done(folder: Path, index: int) -> bool:
    return (folder / "shards" / f"{shard_name(index)}.json").is_file()


def write_shard(folder: Path, index: int, result: ShardResult, prompt_dim: int,
                num_q: int) -> None:
    """Write the arrays, then the JSON marker (both atomically: temp file + rename)."""
    shards = folder / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    name = shard_name(index)
    lengths = [len(c) for c in result.codes]
    codes = (np.concatenate(result.codes) if result.codes
             else np.zeros((0, num_q), np.int16))
    prompts = (np.stack(result.prompts) if result.prompts
               else np.zeros((0, prompt_dim), np.float32))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    with atomic_write(shards / f"{name}.npz") as f:
        np.savez(f, codes=codes, offsets=offsets, prompts=prompts)
    meta = {"clips": result.clips, "skipped": result.skipped, "frames": int(offsets[-1])}
    write_json_atomic(shards / f"{name}.json", meta)


def read_shard_meta(folder: Path, index: int) -> dict:
    return json.loads((folder / "shards" / f"{shard_name(index)}.json").read_text())


def check_plan(folder: Path, plan: dict) -> None:
    """Record the plan, or refuse to resume a cache that was made from something else."""
    file = folder / "plan.json"
    if file.is_file():
        old = json.loads(file.read_text())
        if old != plan:
            diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            raise UserError(f"{folder}: holds a cache prepared with other settings "
                            f"({', '.join(diff)} differ); use a new --out folder")
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(file, plan)


def write_index(folder: Path, plan: dict, num_shards: int) -> dict:
    """Summarise the finished shards into ``index.json`` and return it."""
    shards, skipped, clips, frames = [], [], 0, 0
    for i in range(num_shards):
        meta = read_shard_meta(folder, i)
        shards.append({"name": shard_name(i), "clips": len(meta["clips"]),
                       "frames": meta["frames"]})
        skipped += meta["skipped"]
        clips += len(meta["clips"])
        frames += meta["frames"]
    index = {"format": CACHE_FORMAT, "plan": plan, "shards": shards, "clips": clips,
             "frames": frames, "hours": frames / FRAME_RATE / 3600, "skipped": skipped}
    write_json_atomic(folder / "index.json", index)
    return index


def read_index(folder: str | Path) -> dict:
    """``index.json`` of a finished cache, with a clear error for anything else."""
    file = Path(folder) / "index.json"
    try:
        index = json.loads(file.read_text())
    except (OSError, ValueError):
        raise UserError(f"{folder}: not a token cache (no readable index.json); make one with "
                        "`run_engine.py prepare SRC --out CACHE`") from None
    if index.get("format") != CACHE_FORMAT:
        raise UserError(f"{file}: unknown cache format {index.get('format')!r}")
    return index


def load_shards(folder: str | Path, index: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                           list[str]]:
    """All clips in memory: codes ``[sum T, Q]`` int16, offsets ``[n + 1]``, prompts
    ``[n, P]`` and clip ids (``file#start``)."""
    codes, prompts, lengths, ids = [], [], [], []
    for shard in index["shards"]:
        if shard["clips"] == 0:
            continue
        stem = Path(folder) / "shards" / shard["name"]
        try:
            with np.load(f"{stem}.npz") as z:
                codes.append(z["codes"])
                prompts.append(z["prompts"])
                lengths.append(np.diff(z["offsets"]))
            ids += [c["id"] for c in json.loads(Path(f"{stem}.json").read_text())["clips"]]
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{stem}.npz: damaged cache shard ({e}); delete it and its .json, "
                            "then run prepare again to rebuild it") from None
    if not codes:
        raise UserError(f"{folder}: the cache holds no clips")
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
    return np.concatenate(codes), offsets, np.concatenate(prompts), ids
