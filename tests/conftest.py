"""Shared fixtures: the golden-reference models laid out like the real files, tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import (  # noqa: E402
    REFERENCE,
    TONE_CODEC,
    make_checkpoint_folder,
    make_encodecmae_hub_folder,
)
from live_helpers import run_cli  # noqa: E402
from tone_dataset import make_tone_dataset  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's prompt cache or reaches the hub."""
    monkeypatch.setenv("ENCODECGPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _require_fixtures():
    if not (REFERENCE / "manifest.json").is_file():
        pytest.skip(f"golden fixtures not found at {REFERENCE} "
                    "(../shared/fixtures beside the repo)")


@pytest.fixture(scope="session")
def ckpt_path(tmp_path_factory) -> Path:
    """The tiny EnCodecGPT Lightning checkpoint with a GPT2Config ``config.json`` beside it."""
    _require_fixtures()
    return make_checkpoint_folder(tmp_path_factory.mktemp("encodecgpt"))


@pytest.fixture(scope="session")
def loaded(ckpt_path):
    from engine.model.loading.checkpoint import load_checkpoint

    return load_checkpoint(ckpt_path)


@pytest.fixture(scope="session")
def mae_dir(tmp_path_factory) -> Path:
    """The tiny EnCodecMAE re-assembled in the hub layout (model.pt, config.gin, imports)."""
    _require_fixtures()
    return make_encodecmae_hub_folder(tmp_path_factory.mktemp("encodecmae"))


def tiny_random_model(n_layer: int = 2, n_embd: int = 128, n_head: int = 2, num_q: int = 8,
                      prompt_dim: int | None = None, seed: int = 0):
    """A very small random EnCodecGPT for logic tests (not a preset)."""
    from engine.model.config import GPTSize
    from engine.model.encodecgpt import EnCodecGPT, gpt2_config

    torch.manual_seed(seed)
    size = GPTSize(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=256, vocab_size=1)
    return EnCodecGPT(gpt2_config(size), num_q=num_q, prompt_dim=prompt_dim).eval()


@pytest.fixture(scope="session")
def tone_cache(tmp_path_factory, mae_dir):
    """200 tones (1–1.5 s) + one corrupt and one silent file, prepared by 2 workers."""
    root = tmp_path_factory.mktemp("tones")
    make_tone_dataset(root / "src", 200, seconds=(1.0, 1.5))
    (root / "src" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 8)
    (root / "src" / "quiet").mkdir()
    sf.write(root / "src" / "quiet" / "silent.flac", np.zeros(24000, np.float32), 24000)
    proc = run_cli("prepare", root / "src", "--out", root / "cache", "--codec", TONE_CODEC,
                   "--encodecmae", mae_dir, "--workers", "2", "--shard-size", "64")
    return root, proc
