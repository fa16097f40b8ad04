"""Reading and writing audio files: any format soundfile reads, any rate and channel count.

Every failure becomes a :class:`UserError` naming the file, so the CLI can print one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from engine.errors import UserError


def read_audio(path: str | Path, sample_rate: int,
               max_seconds: float | None = None) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate``.

    Channels are averaged (as ``librosa.load(mono=True)``, which the reference used) and the
    rate converted with soxr "HQ" (librosa's default ``soxr_hq``). ``max_seconds``: read
    only the file's first seconds (the rest is never decoded).

    Returns:
        ``[N]`` float32 samples.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file (expected an audio file)")
    if path.is_dir():
        raise UserError(f"{path}: is a folder (expected an audio file)")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty (expected an audio file)")
    try:
        with sf.SoundFile(path) as f:
            rate, declared = f.samplerate, f.frames
            want = -1 if max_seconds is None else max(1, int(max_seconds * rate))
            if want > 0 and declared > 0:
                declared = min(declared, want)
            data = f.read(frames=want, dtype="float32", always_2d=True)  # [N, C]
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise UserError(f"{path}: not a readable audio file ({_first_line(e)})") from None
    if 0 < declared and data.shape[0] < declared:
        raise UserError(
            f"{path}: truncated audio file (header says {declared} frames, found {data.shape[0]})"
        )
    if data.shape[0] == 0:
        raise UserError(f"{path}: audio file holds no samples")
    if not np.isfinite(data).all():
        raise UserError(f"{path}: audio holds NaN or infinite samples")
    _check_riff_complete(path)
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono)


def _check_riff_complete(path: Path) -> None:
    """libsndfile silently shortens a WAV whose data chunk is cut off; we call it an error."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk = f.read(8)
            length = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                if length not in (0, 0xFFFFFFFF) and offset + 8 + length > size:
                    raise UserError(f"{path}: truncated WAV file (data chunk declares "
                                    f"{length} bytes, only {size - offset - 8} present)")
                return
            offset += 8 + length + (length & 1)


def default_subtype(path: str | Path) -> str | None:
    """WAV (or no suffix) → float32; other formats → libsndfile's default for the suffix."""
    return "FLOAT" if Path(path).suffix.lower() in (".wav", "") else None


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write ``[N]`` or ``[N, C]`` float audio (WAV float32 unless the suffix says otherwise)."""
    path = Path(path)
    subtype = default_subtype(path)
    try:
        sf.write(path, np.asarray(audio, dtype=np.float32), sample_rate, subtype=subtype)
    except (sf.LibsndfileError, OSError, ValueError) as e:
        raise UserError(f"{path}: cannot write audio ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
