"""Where a MusicGen comes from: a short name, a Hugging Face hub id, or a local folder laid
out like the hub (``config.json`` with ``model_type: musicgen``, safetensors weights, the T5
tokenizer files).

The published models (:data:`MUSICGEN_MODELS`) are licensed CC-BY-NC 4.0 (non-commercial).
A hub id is loaded through the Hugging Face cache (downloaded when the hub can be reached);
offline, the error names the files needed (:data:`NEEDED_FILES`) and the command that fetches
them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, MusicgenForConditionalGeneration

from engine.errors import UserError
from engine.model.loading.hub import hub_download, hub_offline
from engine.model.loading.published import cached_file, hub_cache_dir

MODEL_TYPE = "musicgen"
LICENSE = "CC-BY-NC 4.0 (non-commercial)"
MUSICGEN_MODELS = {  # short name -> hub id (Meta's text-to-music checkpoints)
    "musicgen-small": "facebook/musicgen-small",
    "musicgen-medium": "facebook/musicgen-medium",
    "musicgen-large": "facebook/musicgen-large",
}
DEFAULT_MUSICGEN = "facebook/musicgen-small"
NEEDED_FILES = ("config.json", "generation_config.json", "model.safetensors (or its shards "
                "and model.safetensors.index.json)", "tokenizer.json", "tokenizer_config.json",
                "spiece.model", "special_tokens_map.json")


@dataclass
class MusicGenFiles:
    """A loaded MusicGen: the transformers model (text encoder, decoder, audio encoder) and
    the tokenizer of its text encoder."""

    model: MusicgenForConditionalGeneration
    tokenizer: object  # a transformers tokenizer (T5 for the published models)
    source: str


def hub_id_for(source: str) -> str:
    """A short name's hub id (``musicgen-small`` → ``facebook/musicgen-small``), else
    ``source`` unchanged."""
    return MUSICGEN_MODELS.get(str(source).strip().lower(), str(source))


def _local_config(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None


def _is_hub_id(source: str) -> bool:
    parts = source.strip("/").split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def is_musicgen(source: str) -> bool:
    """Whether ``source`` names a MusicGen: a short name, a local folder whose config.json
    says ``model_type: musicgen``, or a hub id ``owner/name`` whose config.json says so (a
    hub id with ``musicgen`` in its name counts without looking, so that offline the error
    can name the files it needs)."""
    text = str(source).strip()
    if text.lower() in MUSICGEN_MODELS:
        return True
    path = Path(text).expanduser()
    if path.is_dir():
        config = _local_config(path)
        return config is not None and config.get("model_type") == MODEL_TYPE
    if path.exists() or not _is_hub_id(text):
        return False
    if "musicgen" in text.lower():
        return True
    found = hub_download(text.strip("/"), "config.json", required=False)
    config = _local_config(found.parent) if found is not None else None
    return config is not None and config.get("model_type") == MODEL_TYPE


def missing_files_error(source: str, why: str) -> UserError:
    """The offline (or failed download) error: what is needed and how to get it."""
    fetch = f"hf download {source} --include '*.json' '*.safetensors' spiece.model"
    return UserError(
        f"{source}: {why}. A MusicGen needs {', '.join(NEEDED_FILES)}; fetch them where "
        f"there is network access ({fetch}) or pass a local folder holding them. "
        f"The published MusicGen weights are licensed {LICENSE}.")


def load_musicgen(source: str) -> MusicGenFiles:
    """Load a MusicGen from a short name, hub id or local folder (eval mode, CPU).

    Raises:
        UserError: files missing (offline: the files needed are named), or not a MusicGen.
    """
    name = hub_id_for(source)
    path = Path(name).expanduser()
    local = path.is_dir()
    if local:
        config = _local_config(path)
        if config is None or config.get("model_type") != MODEL_TYPE:
            raise UserError(f"{path}: not a MusicGen folder (config.json with model_type "
                            f"'{MODEL_TYPE}' expected)")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise missing_files_error(str(path), "no weights (*.safetensors) in the folder")
    where = str(path) if local else name
    offline = not local and hub_offline()
    quiet = logging.getLogger("transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the published configs warn about pad ids = vocab size
    try:
        model = MusicgenForConditionalGeneration.from_pretrained(
            where, local_files_only=offline, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=offline)
    except OSError as e:
        why = ("not in the Hugging Face cache and the hub cannot be reached" if offline
               else f"cannot be loaded ({str(e).splitlines()[0]})")
        raise missing_files_error(where, why) from None
    finally:
        quiet.setLevel(level)
    return MusicGenFiles(model.eval(), tokenizer, where)


def musicgen_rows(cache_dir: Path | None = None) -> list[tuple[str, str, str]]:
    """``--list-models`` rows for the MusicGen short names: name, hub id, what is cached."""
    cache_dir = cache_dir or hub_cache_dir()
    rows = []
    for name, hub in MUSICGEN_MODELS.items():
        have = [f for f in ("config.json", "model.safetensors")
                if cached_file(f"{hub}/{f}", cache_dir) is not None]
        rows.append((name, hub, " + ".join(have) if have else "no (downloaded on first use)"))
    return rows


def musicgen_table(cache_dir: Path | None = None) -> str:
    """The MusicGen part of ``--list-models``."""
    rows = [("name", "hub id", "in cache"), *musicgen_rows(cache_dir)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    return (f"MusicGen (text-to-music; weights licensed {LICENSE}):\n" + "\n".join(lines))
