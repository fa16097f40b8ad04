"""Token sequences: the codebook patterns (MusicGen delay, flattened) with their inverses and
streaming forms, and priming rows made from audio."""
