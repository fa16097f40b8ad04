"""Write a file so that a reader, or a crash, sees the old content or the new, never a part.

The data goes to a hidden temporary file beside the target (the same folder, so the same file
system), which is then renamed over the target: such a rename is atomic on POSIX and Windows.
The temporary name carries the process and thread, so parallel writers never share one.
Used for session.json, a recovered control log, the token cache's shards and markers, and
the prompt cache.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` when the block ends.

    Args:
        path: the file to (re)place.
        mode: ``"wb"`` (bytes) or ``"w"`` (text, UTF-8).

    If the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the original error is the one worth reporting
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json_atomic(path: str | Path, data, indent: int = 1) -> None:
    """Replace ``path`` by ``data`` as JSON atomically."""
    write_text_atomic(path, json.dumps(data, indent=indent))
