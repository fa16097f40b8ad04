"""MusicGen's own audio codec: EnCodec 32 kHz (50 frames/s, 4 codebooks of 2048, 2.2 kbps,
**not causal**: ``use_causal_conv`` is false), with the :class:`~engine.model.codec.Codec`
interface the engine uses for EnCodec 24 kHz."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import EncodecModel

from engine.model.audio_io import read_audio
from engine.model.codec import Codec


class MusicGenCodec(Codec):
    """EnCodec 32 kHz encode/decode (the rate and frame rate come from its config)."""

    def __init__(self, model: EncodecModel, name: str):
        super().__init__(model, name)
        self.sample_rate = model.config.sampling_rate  # 32000
        self.frame_rate = model.config.frame_rate  # 50
        self.hop_length = self.sample_rate // self.frame_rate  # 640

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, num_q: int = 4) -> torch.Tensor:
        """Audio ``[B, 1, N]`` at 32 kHz → codes ``[B, Q, ceil(N / 640)]`` (its only
        bandwidth gives all ``Q`` codebooks; ``num_q`` keeps the first ones)."""
        out = self.model.encode(wav, return_dict=True)
        return out.audio_codes[0][:, :num_q]

    def encode_file(self, path: str | Path, num_q: int = 4) -> torch.Tensor:
        """Read any audio file (downmix, resample to 32 kHz) and encode it → ``[Q, T]``."""
        audio = read_audio(path, self.sample_rate)
        return self.encode(torch.from_numpy(audio)[None, None], num_q)[0]
