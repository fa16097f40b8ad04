"""encodecgpt-live engine.

The data path, one module per step:
audio → ``codec`` (EnCodec codes ``[B, Q, T]``) → ``patterns`` (delayed tokens) →
``model`` (EnCodecGPT logits) → ``sampling`` → ``generate`` → ``patterns`` (undelay) →
``codec`` (audio). ``prompt`` turns an audio file into the EnCodecMAE prompt vector and
``checkpoint`` loads the published weights.
"""

SAMPLE_RATE = 24_000
FRAME_RATE = 75
HOP_LENGTH = 320
