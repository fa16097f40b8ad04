"""Files of a recorded session that stay valid however the recording ends.

* :class:`GrowingWav` — float32 mono WAV whose header sizes are rewritten after every block,
  so a killed process or a full disk leaves a readable file holding all complete blocks;
* :class:`GrowingNpy` — an ``[N, Q]`` int16 ``.npy`` whose header (padded to a fixed length)
  is rewritten after every row block;
* :func:`repair_wav` / :func:`repair_npy` — make the headers agree with the data actually on
  disk (``recover``), dropping a partial trailing sample or row.
"""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import numpy as np

_WAV_HEADER = 44
_NPY_HEADER = 128  # magic + header, padded; large enough for any [N, Q] shape


def _wav_header(rate: int, data_bytes: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 3, 1, rate, rate * 4, 4, 32)
            + b"data" + struct.pack("<I", data_bytes))


class GrowingWav:
    """Append float32 mono samples to a WAV (IEEE float) at ``rate``."""

    def __init__(self, path: Path, rate: int):
        self.path, self.rate = Path(path), rate
        self.file = open(self.path, "xb")  # noqa: SIM115  never overwrite
        self.file.write(_wav_header(rate, 0))
        self.samples = 0

    def write(self, block: np.ndarray) -> None:
        data = np.ascontiguousarray(block, dtype="<f4").tobytes()
        self.file.seek(0, 2)
        self.file.write(data)
        self.samples += len(data) // 4
        self._update()

    def _update(self) -> None:
        self.file.seek(0)
        self.file.write(_wav_header(self.rate, self.samples * 4))
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class GrowingNpy:
    """Append int16 rows ``[Q]`` to an ``.npy`` of shape ``[N, Q]``."""

    def __init__(self, path: Path, width: int):
        self.path, self.width = Path(path), width
        self.file = open(self.path, "xb")  # noqa: SIM115
        self.rows = 0
        self.file.write(_npy_header(0, width))

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype="<i2").reshape(-1, self.width)
        self.file.seek(0, 2)
        self.file.write(rows.tobytes())
        self.rows += rows.shape[0]
        self.file.seek(0)
        self.file.write(_npy_header(self.rows, self.width))
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _npy_header(rows: int, width: int) -> bytes:
    desc = {"descr": "<i2", "fortran_order": False, "shape": (rows, width)}
    text = repr(desc).encode("latin1")
    pad = _NPY_HEADER - 10 - len(text) - 1
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", _NPY_HEADER - 10) + text + b" " * pad + b"\n"


def repair_wav(path: Path) -> int:
    """Rewrite the header of a :class:`GrowingWav` file from its length; returns samples."""
    size = path.stat().st_size
    samples = max(0, (size - _WAV_HEADER) // 4)
    with open(path, "r+b") as f:
        head = f.read(_WAV_HEADER)
        rate = struct.unpack("<I", head[24:28])[0]
        f.truncate(_WAV_HEADER + samples * 4)
        f.seek(0)
        f.write(_wav_header(rate, samples * 4))
    return samples


def repair_npy(path: Path) -> int:
    """Rewrite the header of a :class:`GrowingNpy` file from its length; returns rows."""
    with open(path, "r+b") as f:
        head = f.read(_NPY_HEADER)
        desc = ast.literal_eval(head[10:].decode("latin1").strip())
        width = int(desc["shape"][1])
        size = path.stat().st_size
        rows = max(0, (size - _NPY_HEADER) // (2 * width))
        f.truncate(_NPY_HEADER + rows * 2 * width)
        f.seek(0)
        f.write(_npy_header(rows, width))
    return rows
