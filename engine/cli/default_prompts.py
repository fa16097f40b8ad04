"""Sounds the engine synthesizes for its default prompt slots, so that ``python
run_engine.py`` plays something with no files at hand and every corner of the XY pad
(slots 0–3) has a sound: a plucked string, a bell, filtered noise and a reed (4 s each at
24 kHz, deterministic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine import SAMPLE_RATE
from engine.model.audio_io import write_audio

SECONDS = 4.0


def plucked_string(freq: float = 196.0, decay: float = 0.996) -> np.ndarray:
    """Karplus–Strong: a noise burst through a delay line with an averaging filter."""
    n = int(SECONDS * SAMPLE_RATE)
    period = int(round(SAMPLE_RATE / freq))
    y = np.zeros(n + period + 1)
    y[: period + 1] = np.random.RandomState(0).uniform(-1, 1, period + 1)
    for start in range(period + 1, n + period + 1, period):  # each block needs y[t - P - 1:]
        stop = min(start + period, n + period + 1)
        y[start:stop] = decay * 0.5 * (y[start - period : stop - period]
                                       + y[start - period - 1 : stop - period - 1])
    return _normalise(y[period + 1 :])


def bell(freq: float = 440.0) -> np.ndarray:
    """Inharmonic partials (a struck bar/bell) with decays shorter for higher partials."""
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    partials = [(1.0, 1.0, 1.2), (2.76, 0.6, 0.8), (5.40, 0.35, 0.5), (8.93, 0.2, 0.3)]
    y = sum(a * np.exp(-t / d) * np.sin(2 * np.pi * freq * r * t) for r, a, d in partials)
    return _normalise(y)


def filtered_noise(center: float = 900.0, width: float = 250.0) -> np.ndarray:
    """White noise through a Gaussian band-pass (in the frequency domain)."""
    n = int(SECONDS * SAMPLE_RATE)
    spec = np.fft.rfft(np.random.RandomState(1).randn(n))
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    return _normalise(np.fft.irfft(spec * np.exp(-0.5 * ((f - center) / width) ** 2), n))


def reed(freq: float = 147.0) -> np.ndarray:
    """A buzzy reed: a band-limited sawtooth (odd and even harmonics, 1/n) with a slow
    vibrato and a soft attack."""
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(freq * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / SAMPLE_RATE
    harmonics = range(1, int(SAMPLE_RATE / 2 / (freq * 1.01)))
    y = sum(np.sin(n * phase) / n for n in harmonics)
    return _normalise(y * np.minimum(1.0, t / 0.08))


def _normalise(y: np.ndarray, peak: float = 0.5) -> np.ndarray:
    return (peak * y / max(np.abs(y).max(), 1e-9)).astype(np.float32)


SOUNDS = {"plucked_string": plucked_string, "bell": bell, "filtered_noise": filtered_noise,
          "reed": reed}


def write_default_prompts(folder: Path) -> list[Path]:
    """Write the default sounds as WAV files into ``folder`` (once); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in SOUNDS.items():
        path = folder / f"{name}.wav"
        if not path.is_file():
            write_audio(path, make(), SAMPLE_RATE)
        paths.append(path)
    return paths
