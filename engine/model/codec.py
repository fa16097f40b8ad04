"""EnCodec 24 kHz through ``transformers.EncodecModel``.

Why not the ``encodec`` pip package: it needs a torchaudio that only exists as a CUDA build
and fails to import on CPU torch (see DEVELOPERS.md). The network and weights are the same;
only the state-dict keys differ, and :func:`convert_encodec_state_dict` maps them.

Sources accepted by :func:`load_codec`:

* a Hugging Face id (default ``facebook/encodec_24khz``) or a local ``save_pretrained`` folder;
* an ``encodec``-package state dict file (``encodec_24khz-d7cc33bc.th`` layout);
* an EnCodecGPT Lightning checkpoint (its ``encodec_model.*`` part).
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import torch
from transformers import EncodecConfig, EncodecModel

from engine import FRAME_RATE, SAMPLE_RATE
from engine.errors import UserError
from engine.model.audio_io import read_audio
from engine.model.loading.hub import hub_offline, load_torch_file, resolve_file

DEFAULT_CODEC = "facebook/encodec_24khz"
BANDWIDTHS_KBPS = (1.5, 3.0, 6.0, 12.0, 24.0)
BITS_PER_CODEBOOK = 10  # log2(1024)

# encodec package key -> transformers key, applied in order.
_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^(encoder|decoder)\.model\.", r"\1.layers."),
    (r"\.convtr\.convtr\.", ".conv."),
    (r"\.conv\.conv\.", ".conv."),
    (r"\.weight_g$", ".parametrizations.weight.original0"),
    (r"\.weight_v$", ".parametrizations.weight.original1"),
    (r"^quantizer\.vq\.layers\.(\d+)\._codebook\.", r"quantizer.layers.\1.codebook."),
)


def codebooks_for_bandwidth(kbps: float) -> int:
    """Number of codebooks EnCodec 24 kHz uses at ``kbps`` (6 → 8, 24 → 32)."""
    if kbps not in BANDWIDTHS_KBPS:
        raise UserError(f"bandwidth {kbps} kbps is not one of {list(BANDWIDTHS_KBPS)}")
    return int(math.floor(kbps * 1000 / (BITS_PER_CODEBOOK * FRAME_RATE)))


def bandwidth_for_codebooks(num_q: int) -> float:
    """The EnCodec bandwidth (kbps) whose codebook count is ``num_q``."""
    for kbps in BANDWIDTHS_KBPS:
        if codebooks_for_bandwidth(kbps) == num_q:
            return kbps
    valid = [codebooks_for_bandwidth(b) for b in BANDWIDTHS_KBPS]
    raise UserError(f"EnCodec 24 kHz has no bandwidth with {num_q} codebooks (valid: {valid})")


def convert_encodec_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an ``encodec``-package state dict onto ``transformers.EncodecModel`` keys.

    Example: ``decoder.model.3.convtr.convtr.weight_g`` →
    ``decoder.layers.3.conv.parametrizations.weight.original0``.
    """
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in _KEY_RULES:
            new = re.sub(pattern, repl, new)
        # The shared-storage fixture (embed_avg aliasing embed) must not alias in our model.
        out[new] = value.clone() if "codebook" in new else value
    return out


def encodec_package_state_dict(model: EncodecModel) -> dict[str, torch.Tensor]:
    """The inverse of :func:`convert_encodec_state_dict`: our model in ``encodec``-package keys.

    Training checkpoints store the codec this way (``encodec_model.*``), as the original
    EnCodecGPT checkpoints do. Example: ``decoder.layers.3.conv.parametrizations.weight
    .original0`` → ``decoder.model.3.convtr.convtr.weight_g`` (a transposed conv).
    """
    out = {}
    for key, value in model.state_dict().items():
        new = re.sub(r"^(encoder|decoder)\.layers\.", r"\1.model.", key)
        new = re.sub(r"^quantizer\.layers\.(\d+)\.codebook\.", r"quantizer.vq.layers.\1._codebook.",
                     new)
        conv = re.match(r"^(.*)\.conv\.(bias|parametrizations\.weight\.original[01])$", key)
        if conv:
            kind = ("convtr" if isinstance(model.get_submodule(conv.group(1) + ".conv"),
                                           torch.nn.ConvTranspose1d) else "conv")
            leaf = {"bias": "bias", "parametrizations.weight.original0": "weight_g",
                    "parametrizations.weight.original1": "weight_v"}[conv.group(2)]
            stem = re.sub(r"^(encoder|decoder)\.layers\.", r"\1.model.", conv.group(1))
            new = f"{stem}.{kind}.{kind}.{leaf}"
        out[new] = value.detach().clone()
    return out


def is_encodec_package_state(state: dict) -> bool:
    return any(k.startswith("encoder.model.") for k in state) and any(
        k.startswith("quantizer.vq.") for k in state
    )


def codec_from_encodec_state(state: dict[str, torch.Tensor], origin: str) -> EncodecModel:
    """Build the 24 kHz model and load an ``encodec``-package state dict strictly."""
    model = EncodecModel(EncodecConfig())
    converted = convert_encodec_state_dict(state)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise UserError(
            f"{origin}: not an EnCodec 24 kHz state dict "
            f"(missing {len(missing)} keys e.g. {missing[:2]}, unexpected {unexpected[:2]})"
        )
    return model.eval()


class Codec:
    """EnCodec 24 kHz encode/decode with an explicit codebook count.

    transformers' ``encode`` defaults to 1.5 kbps (2 codebooks); every call here passes the
    bandwidth that gives ``num_q`` codebooks.
    """

    sample_rate = SAMPLE_RATE
    frame_rate = FRAME_RATE

    def __init__(self, model: EncodecModel, name: str = DEFAULT_CODEC):
        self.model = model.eval()
        self.name = name

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, num_q: int = 8) -> torch.Tensor:
        """Audio to codes.

        Args:
            wav: ``[B, 1, N]`` float audio at 24 kHz.
            num_q: codebooks to keep (8 = 6 kbps, 32 = 24 kbps).

        Returns:
            ``[B, Q, ceil(N / 320)]`` int64 codes.
        """
        out = self.model.encode(wav, bandwidth=bandwidth_for_codebooks(num_q), return_dict=True)
        return out.audio_codes[0]  # [1 chunk, B, Q, T] -> [B, Q, T]

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes to audio.

        Args:
            codes: ``[B, Q, T]`` int64 codes in ``[0, 1024)``.

        Returns:
            ``[B, 1, 320 * T]`` float audio.
        """
        out = self.model.decode(codes[None], [None], return_dict=True)
        return out.audio_values

    def encode_file(self, path: str | Path, num_q: int = 8) -> torch.Tensor:
        """Read any audio file (downmix, resample to 24 kHz) and encode it → ``[Q, T]``."""
        audio = read_audio(path, self.sample_rate)
        return self.encode(torch.from_numpy(audio)[None, None], num_q)[0]


def load_codec(source: str | Path | None = None) -> Codec:
    """Load EnCodec 24 kHz from a hub id, a local folder, or a state-dict / checkpoint file."""
    source = str(source or DEFAULT_CODEC)
    path = Path(source)
    if path.is_dir():
        return Codec(_from_pretrained(source), name=str(path))
    if path.is_file() or path.suffix in (".th", ".pt", ".ckpt", ".pth"):
        return Codec(codec_from_file(resolve_file(source)), name=source)
    return Codec(_from_pretrained(source), name=source)


def codec_from_file(path: Path) -> EncodecModel:
    """An ``encodec``-package state dict, or the ``encodec_model.*`` part of a checkpoint."""
    blob = load_torch_file(path)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected an EnCodec state dict or an EnCodecGPT checkpoint")
    prefixed = {k[len("encodec_model.") :]: v for k, v in state.items()
                if k.startswith("encodec_model.")}
    if prefixed:
        state = prefixed
    if not is_encodec_package_state(state):
        raise UserError(
            f"{path}: expected an EnCodec state dict (encodec_24khz-*.th layout) or an "
            f"EnCodecGPT checkpoint with encodec_model.* keys; found keys like {list(state)[:3]}"
        )
    return codec_from_encodec_state(state, str(path))


def _from_pretrained(source: str) -> EncodecModel:
    try:
        model = EncodecModel.from_pretrained(source, local_files_only=hub_offline())
    except OSError as e:
        raise UserError(
            f"{source}: cannot load EnCodec ({str(e).splitlines()[0]}). Give --codec a local "
            "folder (save_pretrained layout) or an encodec_24khz-d7cc33bc.th file, or run once "
            "with network access to fill the Hugging Face cache."
        ) from None
    if model.config.sampling_rate != SAMPLE_RATE:
        raise UserError(f"{source}: EnCodec at {model.config.sampling_rate} Hz; need 24 kHz")
    return model


def codec_digest(codec: Codec) -> str:
    """sha256 over the codec's weights (names and bytes): ties a token cache to its codec."""
    h = hashlib.sha256()
    for key, value in sorted(codec.model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def codec_from_spec(spec: str) -> Codec:
    """``random:SEED`` (an untrained codec, for tests) or any :func:`load_codec` source."""
    if spec.startswith("random:"):
        try:
            return random_codec(int(spec.split(":", 1)[1]))
        except ValueError:
            raise UserError(f"--codec {spec}: expected random:SEED with an integer seed") from None
    return load_codec(spec)


def random_codec(seed: int = 0) -> Codec:
    """An untrained EnCodec 24 kHz with usable codebooks, for smoke tests and benchmarks.

    transformers leaves codebooks at zero (the original waits for k-means), which would map
    everything to code 0; here they are drawn like encodec's ``uniform_init``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = EncodecModel(EncodecConfig())
    for layer in model.quantizer.layers:
        embed = torch.empty_like(layer.codebook.embed)
        bound = math.sqrt(6.0 / embed.shape[1])  # kaiming_uniform_ fan_in bound
        embed.uniform_(-bound, bound, generator=gen)
        layer.codebook.embed.copy_(embed * 2.0)
        layer.codebook.embed_avg.copy_(embed * 2.0)
    return Codec(model, name=f"random(seed={seed})")
