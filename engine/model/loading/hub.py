"""Finding and opening weight files: local paths or Hugging Face hub paths.

A hub path is ``owner/repo/path/in/repo.ext`` (e.g.
``lpepino/encodecgpt/nsynth-base/nsynth-390ksteps-base.ckpt``); it is fetched through the
Hugging Face cache with a progress bar. Offline, the error lists the file needed and the
local option to use instead.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from engine.errors import UserError


def split_hub_path(source: str) -> tuple[str, str] | None:
    """``owner/repo/sub/file`` → (``owner/repo``, ``sub/file``); None if not of that form."""
    parts = source.strip("/").split("/")
    if len(parts) < 3 or source.startswith((".", "/", "~")):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


@functools.cache
def hub_offline() -> bool:
    """True when the hub cannot be reached: ``HF_HUB_OFFLINE`` is set, or a TCP connection to
    the hub (``HF_ENDPOINT``, default huggingface.co:443) fails within 2 s. Checked once per
    process, so an offline machine gets the cache-only answer at once instead of ~30 s of
    download retries (whose warnings would also scroll over the live status line). Behind an
    HTTP(S) proxy the check is left to the hub client."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=2.0):
            return False
    except OSError:
        return True


def hub_download(repo_id: str, filename: str, *, required: bool = True) -> Path | None:
    """Fetch one file through the Hugging Face cache (progress bar on stderr); offline
    (:func:`hub_offline`) only the cache is looked at."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename,
                                    local_files_only=hub_offline()))
    except LocalEntryNotFoundError:  # offline, or no network: must come before its base class
        if not required:
            return None
        raise UserError(
            f"{repo_id}/{filename}: not in the Hugging Face cache and the hub cannot be reached. "
            f"Download it where there is network access (hf download {repo_id} {filename}) "
            "or pass a local file instead."
        ) from None
    except EntryNotFoundError:
        if not required:
            return None
        raise UserError(f"{repo_id}/{filename}: no such file in the Hugging Face repo") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        if not required:
            return None
        raise UserError(
            f"{repo_id}/{filename}: not in the Hugging Face cache and cannot be downloaded "
            f"({type(e).__name__}). Download it where there is network access "
            f"(huggingface-cli download {repo_id} {filename}) or pass a local file instead."
        ) from None


def resolve_file(source: str | Path) -> Path:
    """A local file, or a hub path fetched into the cache."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise UserError(f"{path}: is a folder (expected a checkpoint file)")
    hub = split_hub_path(str(source))
    if hub is None:
        raise UserError(f"{source}: no such file")
    return hub_download(*hub)


def load_torch_file(path: Path, *, trust: bool = False) -> object:
    """``torch.load`` on CPU, refusing arbitrary pickled code unless ``trust`` is set.

    Lightning checkpoints normally hold only tensors and plain containers, which
    ``weights_only=True`` accepts.
    """
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty (expected a PyTorch checkpoint)")
    kind = _not_a_checkpoint(path)
    if kind is not None:
        raise UserError(f"{path}: not a PyTorch checkpoint ({kind}; expected a file written by "
                        "torch.save, e.g. a Lightning .ckpt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise UserError(
                f"{path}: checkpoint holds pickled Python objects besides weights; if you trust "
                "its source, pass --trust-checkpoint"
            ) from None
        raise UserError(f"{path}: not a PyTorch checkpoint ({str(e).splitlines()[0]})") from None
    except Exception as e:  # a damaged pickle fails in any of its opcodes (KeyError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                        f"{first})") from None


_OTHER_FORMATS = {b"RIFF": "a WAV audio file", b"fLaC": "a FLAC audio file",
                  b"OggS": "an Ogg audio file", b"ID3": "an MP3 file", b"\x89HDF": "an HDF5 file"}


def _not_a_checkpoint(path: Path) -> str | None:
    """What ``path`` is instead, when its first bytes say it cannot be a ``torch.save`` file
    (a zip archive, or a pickle from before PyTorch 1.6, which starts with the PROTO opcode
    0x80); None when it may be one. Checked first because the legacy unpickler fails on
    other files with errors that say nothing (``KeyError: 101``)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return None
    for magic, name in _OTHER_FORMATS.items():
        if head.startswith(magic):
            return name
    try:
        head.decode("utf-8")
        return f"a text file starting {head[:24].decode('utf-8', 'replace')!r}"
    except UnicodeDecodeError:
        return f"unknown contents starting {head[:8].hex()}"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file (used to key caches and to identify weights in sessions)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
