"""A synthetic training set: tones of several pitches and timbres, 1–2 s each by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 24000
PITCHES_HZ = (110.0, 165.0, 220.0, 330.0, 440.0, 587.3, 784.0, 1046.5)
TIMBRES = ("sine", "square", "saw", "pluck")


def tone(freq: float, timbre: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One note: a harmonic series whose amplitudes set the timbre, with a short fade."""
    t = np.arange(int(seconds * RATE)) / RATE
    ks = np.arange(1, 16)
    amps = {"sine": (ks == 1) * 1.0, "square": (ks % 2 == 1) / ks, "saw": 1.0 / ks,
            "pluck": 1.0 / ks**1.5}[timbre]
    amps = amps * (ks * freq < RATE / 2)
    phase = rng.uniform(0, 2 * np.pi)
    x = (amps[:, None] * np.sin(2 * np.pi * freq * ks[:, None] * t + phase)).sum(0)
    env = np.exp(-t * 3.0) if timbre == "pluck" else np.minimum(1, np.minimum(t, t[-1] - t) / 0.01)
    x = x * env
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def make_tone_dataset(folder: Path, count: int, seed: int = 0,
                      seconds: tuple[float, float] = (1.0, 2.0)) -> list[Path]:
    """``count`` WAVs under ``folder/<timbre>/`` (a nested tree, as users have)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        timbre = TIMBRES[i % len(TIMBRES)]
        freq = PITCHES_HZ[(i // len(TIMBRES)) % len(PITCHES_HZ)]
        path = folder / timbre / f"{i:04d}_{int(freq)}hz.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(freq, timbre, float(rng.uniform(*seconds)), rng), RATE,
                 subtype="FLOAT")
        paths.append(path)
    return paths
