"""The MusicGen family's command-line parts (``render --model musicgen-small --text ...``)."""
