"""The networks and their files (no threads, no devices).

Data path: audio → ``codec`` (EnCodec codes ``[B, Q, T]``) → ``patterns`` (delayed tokens)
→ ``encodecgpt`` (logits) → ``sampling`` → ``patterns`` (undelay) → ``codec`` (audio).
``encodecmae`` turns audio into the prompt vector; ``prompt_files`` reads a prompt argument
(``.npy`` or audio); ``checkpoint`` and ``hub`` load published weights; ``reference`` holds the
offline generation loops of the original code.
"""
