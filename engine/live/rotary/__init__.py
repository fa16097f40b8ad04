"""The flattened-codebook rotary family's live path: its two window steps (``fast``: a
sliding KV cache; ``exact``: a recompute of the window) and its frame generator."""
