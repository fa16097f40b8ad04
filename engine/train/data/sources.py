"""What a ``prepare`` source holds: the files to read and, per file, which crops to keep.

Three kinds (``--kind``, ``auto`` picks ``nsynth`` when an ``examples.json`` is given or
present, else ``folder``):

* ``folder``: every wav/flac/ogg/mp3 below SRC (recursive); each file is cut into
  consecutive clips of ``clip_seconds`` (the tail kept if at least ``min_seconds``).
* ``nsynth``: an NSynth split (``examples.json`` + ``audio/<note>.wav``), optionally
  filtered by instrument family and source (e.g. guitar, acoustic); one 4 s clip per note.
* ``librilight``: a tree of long recordings; random non-overlapping ``clip_seconds``
  crops, at most ``max_clips`` per file, seeded per file (the original recipe: 4 s, 10).

Crops are chosen in :func:`crops_for`, from the file's length and a seed derived from
its relative path, so they do not depend on worker count or order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import UserError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
KINDS = ("auto", "folder", "nsynth", "librilight")


@dataclass(frozen=True)
class SourceFile:
    """One audio file to read; ``rel`` names it in the cache and seeds its crops."""

    path: str
    rel: str


@dataclass(frozen=True)
class CropRule:
    """How clips are cut out of one file (the same rule for every file of a source)."""

    kind: str  # "whole" (cut in consecutive clips) or "random"
    clip_seconds: float
    min_seconds: float
    max_clips: int  # 0 = no limit
    seed: int


def list_source(src: str | Path, kind: str = "auto", *, families: tuple[str, ...] = (),
                instrument_sources: tuple[str, ...] = ()) -> tuple[str, list[SourceFile]]:
    """The source's kind (resolved) and its files, sorted by relative path.

    Raises:
        UserError: SRC missing, no audio in it, or a filter that matches nothing.
    """
    src = Path(src).expanduser()
    if not src.exists():
        raise UserError(f"{src}: no such file or folder (expected a folder of audio, an NSynth "
                        "examples.json or a LibriLight-style tree)")
    if kind == "auto":
        kind = "nsynth" if (src.name == "examples.json" or (src / "examples.json").is_file()) \
            else "folder"
    if kind == "nsynth":
        files = _nsynth_files(src, families, instrument_sources)
    else:
        if families or instrument_sources:
            raise UserError("--family/--instrument-source filter NSynth splits only "
                            f"(SRC is read as --kind {kind})")
        if not src.is_dir():
            raise UserError(f"{src}: expected a folder for --kind {kind}")
        files = [SourceFile(str(p), p.relative_to(src).as_posix()) for p in sorted(src.rglob("*"))
                 if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()]
        if not files:
            raise UserError(f"{src}: no audio files found (looked recursively for "
                            f"{', '.join(AUDIO_SUFFIXES)})")
    return kind, files


def _nsynth_files(src: Path, families: tuple[str, ...],
                  instrument_sources: tuple[str, ...]) -> list[SourceFile]:
    meta_file = src if src.name == "examples.json" else src / "examples.json"
    root = meta_file.parent
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{meta_file}: not a readable NSynth examples.json ({e})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{meta_file}: expected a JSON object of notes")
    picked = []
    for note, info in sorted(meta.items()):
        info = info if isinstance(info, dict) else {}
        if families and info.get("instrument_family_str") not in families:
            continue
        if instrument_sources and info.get("instrument_source_str") not in instrument_sources:
            continue
        picked.append(SourceFile(str(root / "audio" / f"{note}.wav"), f"audio/{note}.wav"))
    if not picked:
        wanted = f" (family {list(families) or 'any'}, source {list(instrument_sources) or 'any'})"
        raise UserError(f"{meta_file}: no notes match{wanted}")
    return picked


def crop_rule(kind: str, clip_seconds: float, min_seconds: float, max_clips: int | None,
              seed: int) -> CropRule:
    """The crop rule for a source kind; ``max_clips`` None takes the kind's default."""
    if clip_seconds <= 0 or min_seconds <= 0 or min_seconds > clip_seconds:
        raise UserError(f"need 0 < --min-seconds ({min_seconds}) <= --clip-seconds "
                        f"({clip_seconds})")
    if kind == "librilight":
        return CropRule("random", clip_seconds, clip_seconds, 10 if max_clips is None else
                        max_clips, seed)
    return CropRule("whole", clip_seconds, min_seconds, 0 if max_clips is None else max_clips,
                    seed)


def crops_for(rule: CropRule, rel: str, num_samples: int,
              sample_rate: int) -> list[tuple[int, int]]:
    """``[(start, length)]`` in samples for a file of ``num_samples``; may be empty."""
    clip = int(round(rule.clip_seconds * sample_rate))
    if rule.kind == "whole":
        least = int(round(rule.min_seconds * sample_rate))
        out = [(s, min(clip, num_samples - s)) for s in range(0, num_samples, clip)]
        out = [c for c in out if c[1] >= least]
        return out[: rule.max_clips] if rule.max_clips else out
    slots = num_samples // clip
    if slots == 0:
        return []
    rng = np.random.default_rng([rule.seed, _stable_hash(rel)])
    offset = int(rng.integers(0, num_samples - slots * clip + 1))
    chosen = np.sort(rng.permutation(slots)[: rule.max_clips or slots])
    return [(offset + int(i) * clip, clip) for i in chosen]


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
