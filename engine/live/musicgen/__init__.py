"""MusicGen in the live path: the rolling generator over text slots (its window step is
:class:`engine.model.musicgen.lm.MusicGenLM`)."""
