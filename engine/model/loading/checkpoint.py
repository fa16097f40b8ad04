"""Loading and saving EnCodecGPT weights together with the codec they were trained with.

Accepted sources (:func:`load_checkpoint`):

* an original Lightning checkpoint, local or on the hub (``owner/repo/path.ckpt``, e.g.
  ``lpepino/encodecgpt/nsynth-base/nsynth-390ksteps-base.ckpt``): ``{'state_dict'}`` with
  ``gpt.*``, ``vocab_embed.weight``, ``classification_head.*`` and ``encodec_model.*``.
  GPT2 sizes come from a ``config.json`` (GPT2Config format) beside it when present, else
  from the state dict with ``n_head = n_embd / 64``. ``attn.bias``/``attn.masked_bias``
  buffers from older transformers are ignored.
* a checkpoint written by ``run_engine.py train``: the same layout, with the GPT2 config
  stored inside (``encodecgpt_live``), so nothing needs to lie beside it.
* our own folder written by :func:`save_pretrained`: ``config.json`` +
  ``model.safetensors`` + ``codec/`` (a transformers EnCodec folder).
* a published short name (``nsynth``, ``librilight``, ``audioset``;
  :mod:`engine.model.loading.published`), unless a local file or folder has that name.

Which EnCodecMAE the model was trained with (its *pairing*) is known from the published table,
recorded in our folders' ``config.json`` and in our training checkpoints, and unknown for a bare
original file (:attr:`LoadedCheckpoint.encodecmae` is then None).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config

from engine.errors import UserError
from engine.model.codec import Codec, codec_from_encodec_state, is_encodec_package_state, load_codec
from engine.model.config import VOCAB_PER_CODEBOOK, GPTSize
from engine.model.encodecgpt import EnCodecGPT, gpt2_config
from engine.model.loading.hub import (
    file_sha256,
    hub_download,
    load_torch_file,
    resolve_file,
    split_hub_path,
)
from engine.model.loading.published import published_model

DEFAULT_CHECKPOINT = "lpepino/encodecgpt/nsynth-base/nsynth-390ksteps-base.ckpt"
FORMAT_NAME = "encodecgpt-live"
_IGNORED = re.compile(r"^gpt\.h\.\d+\.attn\.(bias|masked_bias)$")
_REQUIRED = ("gpt.wpe.weight", "vocab_embed.weight", "classification_head.weight")


@dataclass
class LoadedCheckpoint:
    """A ready-to-run model and the codec that its tokens belong to."""

    model: EnCodecGPT
    codec: Codec
    source: str
    sha256: str | None = None
    encodecmae: str | None = None  # the EnCodecMAE it was trained with, where known
    pairing: str = "unknown"  # how that is known: "published", "recorded" or "unknown"
    context_s: float | None = None  # seconds of audio priming uses (published models)


def load_checkpoint(source: str | Path, *, trust: bool = False) -> LoadedCheckpoint:
    """Load an EnCodecGPT checkpoint (Lightning file, hub path, our folder, or a published
    short name)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return from_pretrained(path)
    published = None if path.exists() else published_model(str(source))
    if published is not None:
        source = published.checkpoint
    file = resolve_file(source)
    blob = load_torch_file(file, trust=trust)
    state = _lightning_state(blob, file)
    gpt_cfg = (_embedded_config(blob) or _config_beside(source, file)
               or infer_gpt2_config(state, file))
    model = model_from_state(state, gpt_cfg, str(file))
    codec_state = {k[len("encodec_model."):]: v for k, v in state.items()
                   if k.startswith("encodec_model.")}
    if not is_encodec_package_state(codec_state):
        raise UserError(f"{file}: checkpoint has no encodec_model.* weights (EnCodec 24 kHz)")
    codec = Codec(codec_from_encodec_state(codec_state, str(file)), name=f"{source}#encodec")
    loaded = LoadedCheckpoint(model, codec, str(source), file_sha256(file))
    if published is not None:
        loaded.encodecmae, loaded.pairing = published.encodecmae, "published"
        loaded.context_s = published.context_s
    elif (recorded := _recorded_encodecmae(blob)) is not None:
        loaded.encodecmae, loaded.pairing = recorded, "recorded"
    return loaded


def _recorded_encodecmae(blob: dict) -> str | None:
    """The EnCodecMAE spec `run_engine.py train` stores (from its token cache's plan)."""
    meta = blob.get("encodecgpt_live")
    mae = meta.get("encodecmae") if isinstance(meta, dict) else None
    spec = mae.get("spec") if isinstance(mae, dict) else mae
    return spec if isinstance(spec, str) and spec else None


def _lightning_state(blob: object, file: Path) -> dict[str, torch.Tensor]:
    state = blob.get("state_dict") if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(k in state for k in _REQUIRED):
        found = list(state or (blob if isinstance(blob, dict) else {}))[:3]
        raise UserError(
            f"{file}: not an EnCodecGPT checkpoint (expected a Lightning 'state_dict' with "
            f"gpt.*, vocab_embed.weight, classification_head.*; found keys like {found})"
        )
    return state


def _embedded_config(blob: dict) -> GPT2Config | None:
    """The GPT2 config that `run_engine.py train` stores in its checkpoints."""
    meta = blob.get("encodecgpt_live")
    if isinstance(meta, dict) and isinstance(meta.get("gpt2"), dict):
        return GPT2Config.from_dict(meta["gpt2"])
    return None


def _config_beside(source: str | Path, file: Path) -> GPT2Config | None:
    """``config.json`` next to the checkpoint (locally, or in the same hub folder)."""
    local = file.parent / "config.json"
    if not local.is_file():
        hub = split_hub_path(str(source)) if not Path(source).exists() else None
        if hub is None:
            return None
        folder = str(Path(hub[1]).parent)
        name = "config.json" if folder in ("", ".") else f"{folder}/config.json"
        local = hub_download(hub[0], name, required=False)
        if local is None:
            return None
    try:
        return GPT2Config.from_json_file(str(local))
    except (OSError, ValueError) as e:
        raise UserError(f"{local}: not a GPT2Config JSON ({e})") from None


def infer_gpt2_config(state: dict[str, torch.Tensor], origin: Path | str) -> GPT2Config:
    """GPT2 sizes from the state dict; heads are assumed 64-wide (as in every GPT2 size)."""
    n_positions, n_embd = state["gpt.wpe.weight"].shape
    layers = {int(m.group(1)) for k in state if (m := re.match(r"gpt\.h\.(\d+)\.", k))}
    if n_embd % 64:
        raise UserError(f"{origin}: n_embd={n_embd} is not a multiple of 64; put a GPT2Config "
                        "config.json beside the checkpoint")
    wte = state.get("gpt.wte.weight")
    size = GPTSize(n_layer=len(layers), n_head=n_embd // 64, n_embd=n_embd,
                   n_positions=n_positions, vocab_size=wte.shape[0] if wte is not None else 1)
    return gpt2_config(size)


def model_from_state(state: dict[str, torch.Tensor], cfg: GPT2Config, origin: str) -> EnCodecGPT:
    """Build EnCodecGPT for ``state`` and load it strictly (codec keys and old buffers aside)."""
    rows = state["vocab_embed.weight"].shape[0]
    if rows % VOCAB_PER_CODEBOOK:
        raise UserError(f"{origin}: vocab_embed has {rows} rows, not a multiple of 1025")
    proj = state.get("prompt_proj.weight")
    model = EnCodecGPT(cfg, num_q=rows // VOCAB_PER_CODEBOOK,
                       prompt_dim=None if proj is None else proj.shape[1])
    lm_state = {k: v for k, v in state.items()
                if not k.startswith("encodec_model.") and not _IGNORED.match(k)}
    if "gpt.wte.weight" not in lm_state:  # our own saves drop the unused word table
        lm_state["gpt.wte.weight"] = model.gpt.wte.weight.detach()
    try:
        model.load_state_dict(lm_state, strict=True)
    except RuntimeError as e:
        detail = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
        raise UserError(f"{origin}: weights do not fit the GPT2 config ({detail.strip()})") \
            from None
    return model.eval()


def save_pretrained(model: EnCodecGPT, codec: Codec, folder: str | Path,
                    encodecmae: str | None = None, context_s: float | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``codec/`` into ``folder``.

    ``encodecmae`` (the EnCodecMAE the model was trained with) and ``context_s`` are recorded
    in ``config.json`` when known, so a later load can check the pairing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT_NAME,
        "num_q": model.num_q,
        "prompt_dim": model.prompt_dim,
        "gpt2": model.gpt.config.to_diff_dict(),
    }
    if encodecmae:
        config["encodecmae"] = encodecmae
    if context_s:
        config["context_s"] = context_s
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if k != "gpt.wte.weight"}
    save_file(state, str(folder / "model.safetensors"))
    codec.model.save_pretrained(str(folder / "codec"))
    for path in [folder / "config.json", *folder.rglob("*")]:  # safetensors writes 0600
        if path.is_file():
            path.chmod(0o644)
    return folder


def from_pretrained(folder: str | Path) -> LoadedCheckpoint:
    """Load a folder written by :func:`save_pretrained`."""
    folder = Path(folder)
    cfg_file = folder / "config.json"
    try:
        config = json.loads(cfg_file.read_text())
    except (OSError, ValueError):
        raise UserError(f"{folder}: expected an encodecgpt-live folder with config.json, "
                        "model.safetensors and codec/") from None
    if config.get("format") != FORMAT_NAME:
        found = config.get("format")
        raise UserError(f"{cfg_file}: not an encodecgpt-live config (format={found})")
    gpt_cfg = GPT2Config.from_dict(config["gpt2"])
    weights = folder / "model.safetensors"
    try:
        state = load_file(str(weights))
    except (OSError, Exception) as e:  # safetensors raises its own error types
        raise UserError(f"{weights}: cannot read safetensors ({e})") from None
    model = model_from_state(state, gpt_cfg, str(weights))
    codec = load_codec(folder / "codec")
    loaded = LoadedCheckpoint(model, codec, str(folder), file_sha256(weights))
    if isinstance(config.get("encodecmae"), str):
        loaded.encodecmae, loaded.pairing = config["encodecmae"], "recorded"
    if isinstance(config.get("context_s"), int | float):
        loaded.context_s = float(config["context_s"])
    return loaded
