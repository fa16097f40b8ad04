"""Model families: what the engine needs to know about a model besides its network.

A family names its tokenizer-side facts (sample rate, frame rate, codebooks, codebook size,
special tokens, max positions), its token pattern, its conditioning and its window modes.
Two families exist:

* ``encodecgpt``: GPT2 over EnCodec 24 kHz tokens, 8 codebooks, delay pattern, conditioned
  by an EnCodecMAE vector (audio prompt); the checkpoint carries its codec.
* ``rotary``: the NSynth-guitar tutorial's x-transformers decoder, 2 codebooks flattened,
  unconditional (a slot holds an audio prefix); the codec is EnCodec 24 kHz (``--codec``).

:func:`load_family` recognises the family from what ``--model SRC`` holds: a local file with
an x-transformers ``TransformerWrapper`` state dict is ``rotary``; anything else goes to the
EnCodecGPT resolution (:func:`engine.model.loading.checkpoint.load_checkpoint`: hub paths,
folders, checkpoint files, and whatever names it knows) unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine import FRAME_RATE, SAMPLE_RATE
from engine.model.codec import Codec, codec_from_spec
from engine.model.config import NUM_CODES
from engine.model.loading.checkpoint import LoadedCheckpoint, load_checkpoint
from engine.model.loading.hub import file_sha256, load_torch_file
from engine.model.loading.xtransformers import config_beside, load_rotary_state, unwrap_state


@dataclass(frozen=True)
class FamilyFacts:
    """The tokenizer-side facts and seams of a family (see the module docstring)."""

    name: str
    sample_rate: int
    frame_rate: int
    codebooks: int
    card: int  # codes per codebook
    special_tokens: dict = field(default_factory=dict)
    max_positions: int = 0  # tokens (rotary) or frames (encodecgpt) the model was trained on
    pattern: str = "delay"  # delay | flatten
    conditioning: str = "audio-embedding"  # audio-embedding | audio-prefix
    modes: tuple[str, ...] = ("exact", "fast")
    controls: tuple[str, ...] = ()  # control kinds this family lacks are refused


@dataclass
class LoadedFamilyModel:
    """A model of some family, ready to run, with the codec its tokens belong to."""

    facts: FamilyFacts
    model: torch.nn.Module
    codec: Codec
    source: str
    sha256: str | None = None
    checkpoint: LoadedCheckpoint | None = None  # EnCodecGPT: pairing, context, identity


def encodecgpt_facts(model) -> FamilyFacts:
    return FamilyFacts("encodecgpt", SAMPLE_RATE, FRAME_RATE, model.num_q, NUM_CODES,
                       {"empty": 0}, model.max_positions, "delay", "audio-embedding")


def rotary_facts(model) -> FamilyFacts:
    cfg = model.cfg
    return FamilyFacts("rotary", SAMPLE_RATE, FRAME_RATE, cfg.codebooks, cfg.num_tokens,
                       {"start": cfg.start_token}, cfg.max_seq_len, "flatten", "audio-prefix",
                       controls=("temperature", "top_k", "top_p", "seed", "reset", "panic",
                                 "prime"))


def _peek_rotary(path: Path, trust: bool) -> dict | None:
    """The x-transformers state dict in a local file, or None if it holds something else."""
    if not path.is_file():
        return None
    blob = load_torch_file(path, trust=trust)
    return unwrap_state(blob)


def load_family(source: str, *, trust: bool = False, codec: str | None = None,
                given: dict | None = None) -> LoadedFamilyModel:
    """Load ``source`` as whichever family it holds.

    Args:
        source: ``--model`` / ``--checkpoint`` value.
        trust: allow pickled objects in checkpoints.
        codec: the rotary family's codec (``--codec``; default facebook/encodec_24khz).
        given: rotary sizes from the command line (override the JSON beside the file).
    """
    path = Path(source).expanduser()
    state = _peek_rotary(path, trust) if path.suffix != ".ckpt" else None
    if state is None:
        loaded = load_checkpoint(source, trust=trust)
        return LoadedFamilyModel(encodecgpt_facts(loaded.model), loaded.model, loaded.codec,
                                 loaded.source, loaded.sha256, checkpoint=loaded)
    config = {**config_beside(path), **(given or {})}
    model = load_rotary_state(state, config, str(path))
    codec_model = codec_from_spec(codec or "facebook/encodec_24khz")
    return LoadedFamilyModel(rotary_facts(model), model, codec_model, str(source),
                             file_sha256(path))
