"""MusicGen (Copet et al. 2023) through ``transformers.MusicgenForConditionalGeneration``.

A decoder over EnCodec 32 kHz tokens (50 frames/s, 4 codebooks of 2048 codes, the delay
pattern), conditioned on a T5 encoding of a text through cross-attention and sampled with
classifier-free guidance. The pieces, in data-path order:

* :mod:`~engine.model.musicgen.files`: where a MusicGen comes from (short names, hub ids,
  folders laid out like the hub) and what files it needs;
* :mod:`~engine.model.musicgen.text`: a text → its projected T5 encoding, cached by text;
* :mod:`~engine.model.musicgen.guidance`: several slots' encodings as one batch, and the
  mixing rule ``uncond + g·(Σ wᵢ·condᵢ − uncond)`` on the logits;
* :mod:`~engine.model.musicgen.lm`: the decoder's last-position logits over a window of
  delayed token rows (with or without a KV cache), and the engine's row convention;
* :mod:`~engine.model.musicgen.render`: offline text-to-music over the model's whole context,
  continued audiocraft-style beyond it;
* :mod:`~engine.model.musicgen.tiny`: tiny and musicgen-small-sized random models laid out
  like the hub folder (tests, benchmarks).
"""
