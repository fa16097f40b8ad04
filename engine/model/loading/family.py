"""Model families: what the engine needs to know about a model besides its network.

A family names its tokenizer-side facts (sample rate, frame rate, codebooks, codebook size,
special tokens, max positions), its token pattern, its conditioning and its window modes.
Two families exist:

* ``encodecgpt``: GPT2 over EnCodec 24 kHz tokens, 8 codebooks, delay pattern, conditioned
  by an EnCodecMAE vector (audio prompt); the checkpoint carries its codec.
* ``rotary``: the NSynth-guitar tutorial's x-transformers decoder, 2 codebooks flattened,
  unconditional (a slot holds an audio prefix); the codec is EnCodec 24 kHz (``--codec``).
* ``musicgen``: Meta's MusicGen (:mod:`engine.model.musicgen`), EnCodec 32 kHz tokens, 50 Hz,
  4 codebooks of 2048, delay pattern, conditioned by a T5 encoding of a text (a slot holds a
  text), classifier-free guidance; its codec is the model's own audio encoder.

:func:`load_family` recognises the family from what ``--model SRC`` holds: a MusicGen short
name, hub id or folder (:func:`engine.model.musicgen.files.is_musicgen`) is ``musicgen``; a
local file with an x-transformers ``TransformerWrapper`` state dict is ``rotary``; anything else
goes to the EnCodecGPT resolution (:func:`engine.model.loading.checkpoint.load_checkpoint`: hub
paths, folders, checkpoint files, and whatever names it knows) unchanged.
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
from engine.model.musicgen.codec import MusicGenCodec
from engine.model.musicgen.files import MusicGenFiles, is_musicgen, load_musicgen
from engine.model.musicgen.lm import MusicGenLM
from engine.model.musicgen.text import TextEncoder


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
    conditioning: str = "audio-embedding"  # audio-embedding | audio-prefix | text
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
    text: TextEncoder | None = None  # MusicGen: the T5 encoder of text slots (cached)
    files: MusicGenFiles | None = None  # MusicGen: the transformers model and tokenizer


def encodecgpt_facts(model) -> FamilyFacts:
    return FamilyFacts("encodecgpt", SAMPLE_RATE, FRAME_RATE, model.num_q, NUM_CODES,
                       {"empty": 0}, model.max_positions, "delay", "audio-embedding")


def rotary_facts(model) -> FamilyFacts:
    cfg = model.cfg
    return FamilyFacts("rotary", SAMPLE_RATE, FRAME_RATE, cfg.codebooks, cfg.num_tokens,
                       {"start": cfg.start_token}, cfg.max_seq_len, "flatten", "audio-prefix",
                       controls=("temperature", "top_k", "top_p", "seed", "reset", "panic",
                                 "prime"))


def musicgen_facts(lm: MusicGenLM, context_rows: int) -> FamilyFacts:
    codec = lm.model.audio_encoder.config
    return FamilyFacts("musicgen", codec.sampling_rate, codec.frame_rate, lm.num_q, lm.card,
                       {"pad": lm.pad, "bos": lm.pad}, context_rows, "delay", "text",
                       ("exact",), controls=("morph", "mix", "glide", "guidance", "temperature",
                                             "top_k", "top_p", "seed", "reset", "gain", "panic"))


def musicgen_context_rows(files: MusicGenFiles) -> int:
    """Rows the model was trained on: the generation config's ``max_length`` (1500 positions
    = 30 s for the published models) within ``max_position_embeddings``, less the start."""
    positions = files.model.decoder.config.max_position_embeddings
    longest = files.model.generation_config.max_length or positions
    return min(positions, longest) - 1


def _load_musicgen_family(source: str) -> LoadedFamilyModel:
    files = load_musicgen(source)
    lm = MusicGenLM(files.model)
    lm.text = TextEncoder(files.model, files.tokenizer)
    weights = sorted(Path(files.source).glob("*.safetensors"))
    return LoadedFamilyModel(musicgen_facts(lm, musicgen_context_rows(files)), lm,
                             MusicGenCodec(files.model.audio_encoder, files.source),
                             files.source, file_sha256(weights[0]) if len(weights) == 1 else None,
                             text=lm.text, files=files)


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
    if is_musicgen(source):
        return _load_musicgen_family(source)
    path = Path(source).expanduser()
    state = _peek_rotary(path, trust) if path.suffix != ".ckpt" else None
    if state is None:
        loaded = load_checkpoint(source, trust=trust)
        return LoadedFamilyModel(encodecgpt_facts(loaded.model), loaded.model, loaded.codec,
                                 loaded.source, loaded.sha256, checkpoint=loaded)
    config = {**config_beside(path), **(given or {})}
    model = load_rotary_state(state, config, str(path))
    # the codec the model was trained with (our rotary.json says), unless --codec is given
    codec_model = codec_from_spec(codec or config.get("codec") or "facebook/encodec_24khz")
    return LoadedFamilyModel(rotary_facts(model), model, codec_model, str(source),
                             file_sha256(path))
