"""The three EnCodecGPT checkpoints the original author published, by short name.

The original project's later demo code lists them with the EnCodecMAE each was trained with
and a context length (how many seconds of audio priming may use):

* ``nsynth``: ``lpepino/encodecgpt/nsynth-base/nsynth-390ksteps-base.ckpt``, EnCodecMAE
  ``base``, 3 s;
* ``librilight``: ``lpepino/encodecgpt/librilight-base/librilight-500ksteps-base.ckpt``,
  EnCodecMAE ``base``, 3 s;
* ``audioset``: ``lpepino/encodecgpt/audioset-base-st/audioset-500ksteps-base-st.ckpt``,
  EnCodecMAE ``base-st``, 10 s.

:func:`resolve_model_name` is the one place a name becomes files: ``--checkpoint NAME`` calls it
today and a general ``--model NAME`` can call it unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENCODECMAE_HUB_PREFIX = "lpepino/encodecmae-"


@dataclass(frozen=True)
class PublishedModel:
    """One published checkpoint: its short name, hub path, EnCodecMAE and context."""

    name: str
    title: str
    checkpoint: str  # owner/repo/path/in/repo.ckpt
    encodecmae: str  # a short EnCodecMAE name (engine.model.encodecmae.HUB_MODELS)
    context_s: float  # seconds of audio priming uses at most


PUBLISHED: tuple[PublishedModel, ...] = (
    PublishedModel("nsynth", "NSynth",
                   "lpepino/encodecgpt/nsynth-base/nsynth-390ksteps-base.ckpt", "base", 3.0),
    PublishedModel("librilight", "LibriLight",
                   "lpepino/encodecgpt/librilight-base/librilight-500ksteps-base.ckpt",
                   "base", 3.0),
    PublishedModel("audioset", "AudioSet",
                   "lpepino/encodecgpt/audioset-base-st/audioset-500ksteps-base-st.ckpt",
                   "base-st", 10.0),
)
NAMES = tuple(m.name for m in PUBLISHED)


def resolve_model_name(name: str) -> tuple[str, str, float] | None:
    """A published short name → (checkpoint source, EnCodecMAE id, context seconds).

    Args:
        name: ``nsynth``, ``librilight`` or ``audioset`` (any case).

    Returns:
        The hub path of the checkpoint, the short name of its EnCodecMAE and its context in
        seconds; None when ``name`` is not a published name (a path or hub path, say).
    """
    model = published_model(name)
    return None if model is None else (model.checkpoint, model.encodecmae, model.context_s)


def published_model(source: str) -> PublishedModel | None:
    """The published model a short name or its exact hub path names, else None."""
    text = str(source).strip()
    for model in PUBLISHED:
        if text.lower() == model.name or text.strip("/") == model.checkpoint:
            return model
    return None


def encodecmae_name(spec: str | None) -> str | None:
    """A comparable name for an EnCodecMAE spec: ``base`` and ``lpepino/encodecmae-base``
    are both ``base``; a local folder or another hub id has none (None)."""
    if not spec:
        return None
    spec = str(spec).strip("/")
    if spec.startswith(ENCODECMAE_HUB_PREFIX):
        spec = spec[len(ENCODECMAE_HUB_PREFIX):]
    if "/" in spec or Path(spec).expanduser().exists():
        return None
    return spec


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache this process uses (``HF_HUB_CACHE``, ``HF_HOME``), read
    now rather than when huggingface_hub was imported."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants  # heavy import, only for the default location

    return Path(constants.HF_HUB_CACHE)


def cached_file(hub_path: str, cache_dir: Path | None = None) -> Path | None:
    """The local copy of ``owner/repo/file`` in the hub cache, or None (never downloads)."""
    from huggingface_hub import try_to_load_from_cache  # heavy import, only when listing

    parts = hub_path.strip("/").split("/")
    found = try_to_load_from_cache("/".join(parts[:2]), "/".join(parts[2:]),
                                   cache_dir=str(cache_dir or hub_cache_dir()))
    return Path(found) if isinstance(found, str) else None


def models_table(cache_dir: Path | None = None) -> str:
    """``--list-models``: the published models and what of each the local cache holds."""
    cache_dir = cache_dir or hub_cache_dir()
    rows = [("name", "checkpoint", "EnCodecMAE", "context", "in cache")]
    for m in PUBLISHED:
        ckpt = cached_file(m.checkpoint, cache_dir)
        mae = cached_file(f"{ENCODECMAE_HUB_PREFIX}{m.encodecmae}/model.pt", cache_dir)
        have = [what for what, f in (("checkpoint", ckpt), ("encodecmae", mae)) if f]
        rows.append((m.name, m.checkpoint, m.encodecmae, f"{m.context_s:g} s",
                     " + ".join(have) if have else "no (downloaded on first use)"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    return "\n".join(lines) + f"\n(cache: {cache_dir})"
