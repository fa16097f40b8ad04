"""EnCodecMAE (habla-liaa/encodecmae tag v.1.0.0) as the prompt encoder.

The prompt vector of a sound is the time mean of EnCodecMAE's layer −1 features, computed
in independent 4 s chunks (``extract_features_from_file(chunk_size=4, layer=-1)``):

1. EnCodec encoder → ``[1, T, 128]`` with ``T = ceil(n / 320)`` (× the gin ``scale``, 1.0);
2. ``feat_projector`` (Linear 128 → D), then ``+ positional_encoder.scale · PE[t]``
   (sinusoidal, ``t`` restarting at 0 in every chunk);
3. keys ``t >= n // 320`` are padding (−1e9 added to their scores);
4. ResiDual layers on ``(x0, x1) = (x, x)``: ``a = MHA(x0)``; ``x0 = LN1(x0 + a)``;
   ``x1 += a``; ``f = FF(x0)``; ``x0 = LN2(x0 + f)``; ``x1 += f`` — one FF module shared by
   all layers; MHA without biases, heads *interleaved* (channel ``c`` → head ``c mod H``);
5. output ``x0 + final_norm(x1)``.

Hub layout (``lpepino/encodecmae-{small,base,large,base-st,large-st}``): ``model.pt`` with
``state_dict``, ``config.gin`` (sizes) and ``imports``. Decoder and heads are not needed for
features; their keys are accepted and ignored.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import EncodecConfig
from transformers.models.encodec.modeling_encodec import EncodecEncoder

from engine import HOP_LENGTH, SAMPLE_RATE
from engine.atomic_write import atomic_write
from engine.errors import UserError
from engine.model.audio_io import read_audio
from engine.model.codec import convert_encodec_state_dict
from engine.model.loading.gin_sizes import find_binding, parse_gin
from engine.model.loading.hub import file_sha256, hub_download, load_torch_file

HUB_MODELS = ("small", "base", "large", "base-st", "large-st")
DEFAULT_ENCODECMAE = "base"
CHUNK_SECONDS = 4
_FEATURE_PREFIXES = ("feat_projector.", "positional_encoder.", "visible_encoder.")
_IGNORED_PREFIXES = ("target_encoder.", "decoder.", "decoder_projector.", "head.",
                     "extra_head.")


class InterleavedMHA(nn.Module):
    """EnCodecMAE's attention: no biases, scale ``d_head^-0.5``, interleaved heads."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.d_head = heads, dim // heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape  # [N, T, D] -> [N, H, T, dh]; channel c = i * H + h
        return x.view(n, t, self.d_head, self.heads).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """``x [N, T, D]``, ``key_bias [N, 1, 1, T]`` (0 or −1e9) → ``[N, T, D]``."""
        q, k, v = self._split(self.wq(x)), self._split(self.wk(x)), self._split(self.wv(x))
        att = (q @ k.transpose(-2, -1)) * self.d_head**-0.5 + key_bias
        y = att.softmax(dim=-1) @ v  # [N, H, T, dh]
        n, _, t, _ = y.shape
        return self.wo(y.permute(0, 2, 3, 1).reshape(n, t, self.d_head * self.heads))


class ResiDualLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ff: nn.Module):
        super().__init__()
        self.att_layer = InterleavedMHA(dim, heads)
        self.ff_layer = ff  # shared by every layer of the encoder, as in the original
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x0, x1, key_bias):
        a = self.att_layer(x0, key_bias)
        x0, x1 = self.norm1(x0 + a), x1 + a
        f = self.ff_layer(x0)
        return self.norm2(x0 + f), x1 + f


class VisibleEncoder(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, ff_dim: int):
        super().__init__()
        ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), nn.Linear(ff_dim, dim))
        self.encoder_layers = nn.ModuleList(ResiDualLayer(dim, heads, ff) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x0 = x1 = x
        for layer in self.encoder_layers:
            x0, x1 = layer(x0, x1, key_bias)
        return x0 + self.final_norm(x1)


class PositionalScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))


def sinusoidal_pe(length: int, dim: int) -> torch.Tensor:
    """``[length, dim]`` float32: PE[t, 2i] = sin(t·w_i), PE[t, 2i+1] = cos(t·w_i)."""
    position = torch.arange(0, length).unsqueeze(1).float()
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float) * -(math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


class EncodecMAEFeatures(nn.Module):
    """The feature path of EnCodecMAE (encoder side only).

    Args:
        dim: model width D; layers, heads, ff_dim: visible encoder sizes;
        wav_scale: the EncodecEncoder ``scale`` (1.0 in every released config).
    """

    def __init__(self, dim: int, layers: int, heads: int, ff_dim: int, wav_scale: float = 1.0):
        super().__init__()
        self.wav_encoder = EncodecEncoder(EncodecConfig())
        self.feat_projector = nn.Linear(128, dim)
        self.positional_encoder = PositionalScale()
        self.visible_encoder = VisibleEncoder(dim, layers, heads, ff_dim)
        self.wav_scale = wav_scale
        self.dim = dim

    @torch.inference_mode()
    def chunk_features(self, chunk: torch.Tensor) -> torch.Tensor:
        """``[n]`` samples (one chunk) → ``[ceil(n/320), D]`` layer −1 features."""
        n = chunk.shape[0]
        emb = self.wav_encoder(chunk[None, None]).permute(0, 2, 1) * self.wav_scale  # [1,T,128]
        x = self.feat_projector(emb)
        t = x.shape[1]
        x = x + self.positional_encoder.scale * sinusoidal_pe(t, self.dim).to(x)[None]
        padded = (torch.arange(t, device=x.device) >= n // HOP_LENGTH).to(x.dtype)
        key_bias = (padded * -1e9)[None, None, None, :]
        return self.visible_encoder(x, key_bias)[0]

    def features(self, audio: np.ndarray, chunk_seconds: float = CHUNK_SECONDS) -> np.ndarray:
        """``[N]`` float32 audio at 24 kHz → ``[T, D]`` features, chunks joined in time."""
        if audio.size == 0:
            raise ValueError("empty audio")
        wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        hop = int(chunk_seconds * SAMPLE_RATE)
        param = next(self.parameters())
        parts = [self.chunk_features(wav[i : i + hop].to(param)) for i in range(0, len(wav), hop)]
        return torch.cat(parts).float().cpu().numpy()


class PromptEncoder:
    """Audio file → prompt vector, with embeddings cached by file content hash."""

    def __init__(self, mae: EncodecMAEFeatures, name: str, weights_sha256: str,
                 cache_dir: Path | None = None):
        self.mae = mae.eval()
        self.name = name
        self.weights_sha256 = weights_sha256
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()

    @property
    def dim(self) -> int:
        return self.mae.dim

    def frames(self, path: str | Path, max_seconds: float | None = None) -> np.ndarray:
        """``[T, D]`` float32 layer −1 features of an audio file (of its first
        ``max_seconds`` if given)."""
        return self.mae.features(read_audio(path, SAMPLE_RATE, max_seconds))

    def prompt(self, path: str | Path, max_seconds: float | None = None) -> np.ndarray:
        """``[D]`` float32 prompt vector (time mean of the features), cached; of the file's
        first ``max_seconds`` if given (part of the cache key)."""
        cached = self._cache_file(Path(path), max_seconds)
        if cached is not None and cached.is_file():
            try:
                vec = np.load(cached)
                if vec.shape == (self.dim,):
                    return vec
            except (OSError, ValueError):
                pass  # a damaged cache entry is recomputed
        frames = self.frames(path) if max_seconds is None else self.frames(path, max_seconds)
        vec = frames.mean(axis=0).astype(np.float32)
        if cached is not None:
            _atomic_save(cached, vec)
        return vec

    def _cache_file(self, path: Path, max_seconds: float | None = None) -> Path | None:
        if self.cache_dir is None or not path.is_file():
            return None
        limit = "" if max_seconds is None else f"|first {float(max_seconds)} s"
        key = hashlib.sha256(f"{self.weights_sha256}|{CHUNK_SECONDS}|"
                             f"{file_sha256(path)}{limit}".encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.npy"


def default_cache_dir() -> Path:
    root = os.environ.get("ENCODECGPT_CACHE") or Path.home() / ".cache" / "encodecgpt-live"
    return Path(root) / "prompts"


def _atomic_save(target: Path, vec: np.ndarray) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target) as f:
            np.save(f, vec)
    except OSError:
        pass  # caching is an optimisation; a read-only home must not stop embedding


def resolve_encodecmae_files(source: str) -> tuple[Path, Path]:
    """(``model.pt``, ``config.gin``) for a short name, hub id, folder or ``model.pt`` path."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path / "model.pt", path / "config.gin"
    if path.is_file():
        return path, path.parent / "config.gin"
    repo = f"lpepino/encodecmae-{source}" if source in HUB_MODELS else source
    if repo.count("/") != 1:
        raise UserError(f"{source}: no such EnCodecMAE file, folder or model name "
                        f"(names: {', '.join(HUB_MODELS)}; or a hub id such as "
                        "lpepino/encodecmae-base)")
    return hub_download(repo, "model.pt"), hub_download(repo, "config.gin")


def load_encodecmae(source: str = DEFAULT_ENCODECMAE, *, cache_dir: Path | None = None,
                    trust: bool = False) -> PromptEncoder:
    """Load EnCodecMAE features from the hub layout (``model.pt`` + ``config.gin``)."""
    ckpt, gin_file = resolve_encodecmae_files(source)
    for f, what in ((ckpt, "model.pt"), (gin_file, "config.gin")):
        if not f.is_file():
            raise UserError(f"{f}: missing; an EnCodecMAE folder needs {what} "
                            "(hub layout: model.pt, config.gin, imports)")
    blob = load_torch_file(ckpt, trust=trust)
    state = blob.get("state_dict") if isinstance(blob, dict) else None
    if not isinstance(state, dict) or "feat_projector.weight" not in state:
        raise UserError(f"{ckpt}: not an EnCodecMAE model.pt (expected 'state_dict' with "
                        "wav_encoder.*, feat_projector.*, visible_encoder.*)")
    mae = mae_from_state(state, gin_file.read_text(), str(ckpt))
    return PromptEncoder(mae, str(source), file_sha256(ckpt), cache_dir)


def mae_from_state(state: dict[str, torch.Tensor], gin_text: str,
                   origin: str) -> EncodecMAEFeatures:
    """Size the model from the state dict (width, layers, FF) and gin (heads), load strictly."""
    gin = parse_gin(gin_text)
    dim = state["feat_projector.weight"].shape[0]
    prefix = "visible_encoder.encoder_layers."
    layers = len({k.split(".")[2] for k in state if k.startswith(prefix)})
    ff_dim = state["visible_encoder.encoder_layers.0.ff_layer.0.weight"].shape[0]
    heads = find_binding(gin, "encoder/tasks.models.transformers.MultiHeadAttention.num_heads")
    if not isinstance(heads, int) or dim % heads:
        raise UserError(f"{origin}: config.gin gives no usable encoder num_heads ({heads!r})")
    scale = find_binding(gin, "encoders.EncodecEncoder.scale", 1.0)
    mae = EncodecMAEFeatures(dim, layers, heads, ff_dim, float(scale))
    ours = {}
    for key, value in state.items():
        if key.startswith("wav_encoder.model."):  # encodec-package encoder keys
            enc = convert_encodec_state_dict({"encoder." + key[len("wav_encoder.model."):]: value})
            ours.update({"wav_encoder." + k[len("encoder."):]: v for k, v in enc.items()})
        elif key.startswith(_FEATURE_PREFIXES):
            ours[key] = value
        elif not key.startswith(_IGNORED_PREFIXES):
            raise UserError(f"{origin}: unexpected EnCodecMAE key {key!r}")
    try:
        mae.load_state_dict(ours, strict=True)
    except RuntimeError as e:
        detail = str(e).split("\n\t")[1].strip() if "\n\t" in str(e) else str(e)
        raise UserError(f"{origin}: EnCodecMAE weights do not fit ({detail})") from None
    return mae.eval()
