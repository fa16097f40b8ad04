"""Untrained models for smoke tests, benchmarks and replays of random-weights sessions."""

from __future__ import annotations

import torch

from engine.model.codec import Codec, random_codec
from engine.model.config import PRESETS, GPTSize
from engine.model.encodecgpt import EnCodecGPT, gpt2_config


def random_model(ident: dict) -> tuple[EnCodecGPT, Codec]:
    """The untrained model and codec an identity names.

    Args:
        ident: ``preset`` (a :data:`PRESETS` name) or ``size`` (:class:`GPTSize` fields),
            ``weights_seed``, and ``prompt_dim`` (None: the model's own width). Recorded as
            is in ``session.json``, so a replay rebuilds the same weights.
    """
    size = GPTSize(**ident["size"]) if "size" in ident else PRESETS[ident["preset"]]
    with torch.random.fork_rng():
        torch.manual_seed(ident["weights_seed"])
        model = EnCodecGPT(gpt2_config(size), prompt_dim=ident.get("prompt_dim")).eval()
    return model, random_codec(ident["weights_seed"])
