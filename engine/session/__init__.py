"""Recorded sessions: the recorder (live), and replay, recover and plot (offline)."""
