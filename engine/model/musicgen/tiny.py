"""Random MusicGen models laid out like the hub folder: a tiny one for tests, and one of
musicgen-small's size for benchmarks (``bench/realtime.py --model musicgen-small-random``).

:func:`save_random_musicgen` writes what ``facebook/musicgen-*`` holds — ``config.json``
(``model_type: musicgen``), ``generation_config.json``, ``model.safetensors`` and a tokenizer
(``tokenizer.json`` + ``tokenizer_config.json``) — so every loading path is exercised; the
tokenizer is a word-level one over a few words (no T5 vocabulary can be downloaded here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    EncodecConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    PreTrainedTokenizerFast,
    T5Config,
)

PAD = 2048  # pad = start token of the published models (= vocab size)
WORDS = ("an uplifting jazz song warm analog pad broken breakbeat slow piano ambient drone "
         "fast techno with drums and bass guitar loud quiet").split()


@dataclass(frozen=True)
class MusicGenSize:
    """The sizes a random MusicGen is built with."""

    t5_width: int
    t5_layers: int
    t5_heads: int
    width: int  # decoder hidden size
    layers: int
    heads: int
    ffn: int
    max_positions: int
    codec_filters: int  # EnCodec num_filters (64 in the published 32 kHz codec)
    codec_hidden: int
    init: float = 0.02  # decoder init std: larger in the tiny model, so the text matters


SIZES = {
    "tiny": MusicGenSize(32, 2, 4, 48, 2, 4, 96, 256, 4, 16, init=0.2),
    # musicgen-small: t5-base (768, 12 layers), decoder 1024 x 24 layers, 16 heads, ffn 4096
    "small": MusicGenSize(768, 12, 12, 1024, 24, 16, 4096, 2048, 64, 128),
}


def musicgen_config(size: MusicGenSize) -> MusicgenConfig:
    """A MusicGen config: T5 text encoder, delay-pattern decoder over 4 x 2048 codes, and the
    32 kHz EnCodec (non-causal, 50 frames/s, 4 codebooks at 2.2 kbps)."""
    t5 = T5Config(vocab_size=len(WORDS) + 3, d_model=size.t5_width, d_kv=size.t5_width
                  // size.t5_heads, d_ff=4 * size.t5_width, num_layers=size.t5_layers,
                  num_heads=size.t5_heads, feed_forward_proj="relu")
    codec = EncodecConfig(sampling_rate=32_000, audio_channels=1, use_causal_conv=False,
                          codebook_size=2048, target_bandwidths=[2.2],
                          upsampling_ratios=[8, 5, 4, 4], num_filters=size.codec_filters,
                          hidden_size=size.codec_hidden, codebook_dim=size.codec_hidden,
                          num_lstm_layers=2, normalize=False, norm_type="weight_norm",
                          pad_mode="reflect")
    decoder = MusicgenDecoderConfig(vocab_size=2048, hidden_size=size.width,
                                    num_hidden_layers=size.layers,
                                    num_attention_heads=size.heads, ffn_dim=size.ffn,
                                    num_codebooks=4, max_position_embeddings=size.max_positions,
                                    pad_token_id=PAD, bos_token_id=PAD,
                                    decoder_start_token_id=PAD,
                                    initializer_factor=size.init)
    return MusicgenConfig(text_encoder=t5.to_dict(), audio_encoder=codec.to_dict(),
                          decoder=decoder.to_dict())


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over :data:`WORDS` that ends every text with ``</s>`` as T5's
    does (ids: 0 pad, 1 ``</s>``, 2 unk, then the words)."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=512)


def random_musicgen(size: str = "tiny", seed: int = 0,
                    context_frames: int = 1500) -> MusicgenForConditionalGeneration:
    """An untrained MusicGen of a :data:`SIZES` size (eval mode); its generation config says
    guidance 3, top-k 250 and ``max_length = context_frames`` as the published ones do."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(musicgen_config(SIZES[size])).eval()
    gen = model.generation_config
    gen.decoder_start_token_id = gen.pad_token_id = gen.bos_token_id = PAD
    gen.guidance_scale, gen.top_k, gen.do_sample = 3.0, 250, True
    gen.max_length = context_frames
    return model


def save_random_musicgen(folder: str | Path, size: str = "tiny", seed: int = 0,
                         context_frames: int = 1500) -> Path:
    """Write a random MusicGen and its tokenizer into ``folder`` like the hub folder."""
    folder = Path(folder)
    random_musicgen(size, seed, context_frames).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder
