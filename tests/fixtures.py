"""Paths to the golden reference fixtures and helpers that lay them out like the real files.

The fixtures live in ``../shared/fixtures/reference`` (resolved from the repo root) and are
never copied into the repo. Tests that need them skip, saying so, in a clone without them.
"""

from __future__ import annotations

import json
import shutil
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from live_helpers import (
    REPO,
    run_cli,  # noqa: F401  (its old home; it lives with the other runners)
)

REFERENCE = REPO.parent / "shared" / "fixtures" / "reference"

# The fixtures' seeded EnCodec weights: a random codec whose codes vary (random_codec's do not).
TONE_CODEC = str(REFERENCE / "encodecgpt_tiny.ckpt")

needs_fixtures = pytest.mark.skipif(
    not (REFERENCE / "manifest.json").is_file(),
    reason=f"golden fixtures not found at {REFERENCE} (../shared/fixtures beside the repo)",
)


def ref(name: str) -> Path:
    return REFERENCE / name


@cache
def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(ref(name)) as z:
        return {k: z[k] for k in z.files}


@lru_cache(maxsize=1)
def manifest() -> dict:
    return json.loads(ref("manifest.json").read_text())


def make_checkpoint_folder(dest: Path) -> Path:
    """The tiny EnCodecGPT checkpoint with its GPT2Config ``config.json`` beside it.

    Returns the ``.ckpt`` path (a symlink to the fixture, so nothing large is copied).
    """
    dest.mkdir(parents=True, exist_ok=True)
    ckpt = dest / "encodecgpt_tiny.ckpt"
    if not ckpt.exists():
        ckpt.symlink_to(ref("encodecgpt_tiny.ckpt"))
    (dest / "config.json").write_text(json.dumps(manifest()["encodecgpt_ckpt"]["gpt2_config"]))
    return ckpt


def make_encodecmae_hub_folder(dest: Path) -> Path:
    """Re-assemble the hub layout ``model.pt`` + ``config.gin`` + ``imports`` (fixture README).

    The slim file holds the 59 non-EnCodec keys; ``wav_encoder.model.<k>`` comes from
    ``encodec_model.encoder.<k>`` and ``target_encoder.model.<k>`` from
    ``encodec_model.quantizer.<k>`` of the EnCodecGPT checkpoint, in the manifest's key order.
    """
    dest.mkdir(parents=True, exist_ok=True)
    slim = torch.load(ref("encodecmae_tiny_slim.pt"), weights_only=True)["state_dict"]
    gpt = torch.load(ref("encodecgpt_tiny.ckpt"), weights_only=True)["state_dict"]
    full = {}
    for entry in manifest()["encodecmae_full_state_dict"]["keys"]:
        key, src = entry["key"], entry.get("from_encodecgpt_ckpt_key")
        full[key] = gpt[src].clone() if src else slim[key]
    torch.save({"state_dict": full}, dest / "model.pt")
    shutil.copy(ref("encodecmae_tiny_config.gin"), dest / "config.gin")
    shutil.copy(ref("encodecmae_tiny_imports.gin"), dest / "imports")
    return dest

