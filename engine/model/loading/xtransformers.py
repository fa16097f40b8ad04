"""Loading an x-transformers ``TransformerWrapper`` state dict into :class:`RotaryLM`.

Key names, for ``Decoder(dim, depth, heads, rotary_pos_emb=True)`` (x-transformers lays its
layers out as ``a, f, a, f, ...``, each ``[norms, block, residual]``)::

    token_emb.emb.weight                                   -> token_emb.weight
    attn_layers.layers.{2i}.0.0.<norm>                     -> blocks.i.attn_norm.*
    attn_layers.layers.{2i}.1.to_{q,k,v,out}.weight        -> blocks.i.to_*.weight
    attn_layers.layers.{2i+1}.0.0.<norm>                   -> blocks.i.ff_norm.*
    attn_layers.layers.{2i+1}.1.ff.0.0.{weight,bias}       -> blocks.i.ff_in.*
    attn_layers.layers.{2i+1}.1.ff.2.{weight,bias}         -> blocks.i.ff_out.*
    attn_layers.final_norm.<norm>                          -> final_norm.*
    to_logits.{weight,bias}                                -> to_logits.*
    attn_layers.rotary_pos_emb.inv_freq                    (checked, not loaded)

Versions (checked against the released wheels 1.26 … 2.31.10): up to 1.26 a norm is
``nn.LayerNorm`` with ``weight`` and ``bias`` and ``to_logits`` has a bias; 1.27–1.30 a
bias-less ``weight``; from 1.31 a ``gamma``, and from 1.36 that ``gamma`` is stored minus one
(``norm_add_unit_offset=True``: the norm multiplies by ``gamma + 1``). The rotary channel
pairing changed in 1.31 too (halves up to 1.30, neighbours from 1.31), so ``weight`` norms
mean 1.30 or older. ``gamma`` alone cannot tell 1.31–1.35 from 1.36+: the JSON beside the
checkpoint may say ``"norm_unit_offset": true|false``; without it the gammas decide (they
start at 1 without the offset and at 0 with it, and training moves them little): a mean
below 0.5 is read as stored minus one.
A state dict with an absolute position embedding (``pos_emb.*``) is refused: the recipe has
none, and the sliding window relies on positions being relative.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch

from engine.errors import UserError
from engine.model.rotary_lm import RotaryLM, RotaryLMConfig

MARKER_KEY = "token_emb.emb.weight"
_LAYER = re.compile(r"^attn_layers\.layers\.(\d+)\.(.+)$")
_CONFIG_FIELDS = ("dim", "depth", "heads", "codebooks", "max_seq_len", "num_tokens",
                  "start_token")
_JSON_FIELDS = (*_CONFIG_FIELDS, "norm_unit_offset", "codec")  # codec: what we trained on


def is_xtransformers_state(state: object) -> bool:
    """True if ``state`` looks like a ``TransformerWrapper`` state dict."""
    return isinstance(state, dict) and any(k.endswith(MARKER_KEY) for k in state)


def unwrap_state(blob: object) -> dict[str, torch.Tensor] | None:
    """The TransformerWrapper state dict inside a saved object, prefixes stripped.

    Accepts a bare ``model.state_dict()``, or one under ``'state_dict'``/``'model'`` (as
    Lightning or a training loop saves it), with a prefix such as ``model.`` on every key.
    """
    for candidate in (blob, *(blob.get(k) for k in ("state_dict", "model")
                              if isinstance(blob, dict))):
        if not is_xtransformers_state(candidate):
            continue
        marker = next(k for k in candidate if k.endswith(MARKER_KEY))
        prefix = marker[: -len(MARKER_KEY)]
        return {k[len(prefix):]: v for k, v in candidate.items() if k.startswith(prefix)}
    return None


def _norm_layout(state: dict[str, torch.Tensor]) -> str:
    return "gamma" if "attn_layers.final_norm.gamma" in state else "weight"


def _rename(key: str) -> str | None:
    """Our parameter name for an x-transformers key (None: checked elsewhere, not loaded)."""
    norm = {"gamma": "weight", "weight": "weight", "bias": "bias"}
    if key == "token_emb.emb.weight" or key.startswith("to_logits."):
        return key.replace("token_emb.emb.", "token_emb.")
    if key.startswith("attn_layers.final_norm."):
        return f"final_norm.{norm[key.rsplit('.', 1)[1]]}"
    if key == "attn_layers.rotary_pos_emb.inv_freq":
        return None
    m = _LAYER.match(key)
    if m is None:
        raise KeyError(key)
    index, rest = int(m.group(1)), m.group(2)
    block, is_ff = index // 2, index % 2 == 1
    if rest.startswith("0.0."):
        return f"blocks.{block}.{'ff_norm' if is_ff else 'attn_norm'}.{norm[rest[4:]]}"
    if rest.startswith("1.ff.0.0."):
        return f"blocks.{block}.ff_in.{rest[9:]}"
    if rest.startswith("1.ff.2."):
        return f"blocks.{block}.ff_out.{rest[7:]}"
    if rest.startswith("1.to_"):
        return f"blocks.{block}.{rest[2:]}"
    raise KeyError(key)


def config_from_state(state: dict[str, torch.Tensor], given: dict, origin: str) -> RotaryLMConfig:
    """Sizes read from the state dict where it tells them; the rest from ``given`` (the JSON
    beside the checkpoint or the command line), else the recipe's defaults."""
    num_tokens, dim = state[MARKER_KEY].shape
    layers = {int(m.group(1)) for k in state if (m := _LAYER.match(k))}
    if len(layers) % 2:
        raise UserError(f"{origin}: {len(layers)} layers; expected attention/feed-forward pairs")
    values = {"dim": dim, "depth": len(layers) // 2, "num_tokens": num_tokens}
    heads = int(given.get("heads", RotaryLMConfig.heads))
    inner = state["attn_layers.layers.0.1.to_q.weight"].shape[0] if layers else dim
    inv_freq = state.get("attn_layers.rotary_pos_emb.inv_freq")
    dim_head = inner // heads
    derived = {"dim_head": dim_head,
               "rotary_dim": 2 * len(inv_freq) if inv_freq is not None else dim_head // 2}
    for name, value in given.items():
        if name in values and value != values[name]:
            raise UserError(f"{origin}: config says {name}={value}, the weights say "
                            f"{values[name]}")
    return RotaryLMConfig(
        **{**{k: v for k, v in given.items() if k in _CONFIG_FIELDS}, **values, **derived},
        rotary_pairs="interleaved" if _norm_layout(state) == "gamma" else "halves",
        norm_bias="attn_layers.final_norm.bias" in state,
        logits_bias="to_logits.bias" in state)


def load_rotary_state(state: dict[str, torch.Tensor], given: dict, origin: str) -> RotaryLM:
    """A :class:`RotaryLM` holding an x-transformers state dict's weights.

    Raises:
        UserError: absolute position embedding, unknown keys, or shapes that disagree.
    """
    if any(k.startswith("pos_emb.") for k in state):
        raise UserError(f"{origin}: has an absolute position embedding (pos_emb.*); only "
                        "rotary-position decoders (rotary_pos_emb=True) can slide their window")
    cfg = config_from_state(state, given, origin)
    if cfg.inner_dim != state["attn_layers.layers.0.1.to_q.weight"].shape[0]:
        raise UserError(f"{origin}: attention width is not divisible by heads {cfg.heads}")
    model = RotaryLM(cfg)
    offset = 1.0 if unit_offset(state, given) else 0.0
    ours: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".beta") and not value.any():
            continue  # 1.27-era bias-free LayerNorm kept a zero 'beta' buffer
        try:
            name = _rename(key)
        except KeyError:
            raise UserError(f"{origin}: unexpected key {key!r} for a rotary Decoder "
                            "(TransformerWrapper + Decoder(rotary_pos_emb=True))") from None
        if name is not None:
            ours[name] = value.float() + (offset if key.endswith(".gamma") else 0.0)
    _check_inv_freq(state, cfg, origin)
    try:
        model.load_state_dict(ours, strict=True)
    except RuntimeError as e:
        raise UserError(f"{origin}: weights do not fit dim={cfg.dim} depth={cfg.depth} "
                        f"heads={cfg.heads} ({str(e).splitlines()[0]})") from None
    return model.eval()


def unit_offset(state: dict[str, torch.Tensor], given: dict) -> bool:
    """Whether ``gamma`` is stored minus one (x-transformers 1.36+); see the module doc."""
    gammas = [v.float() for k, v in state.items() if k.endswith(".gamma")]
    if not gammas:
        return False
    if "norm_unit_offset" in given:
        return bool(given["norm_unit_offset"])
    return float(torch.cat(gammas).mean()) < 0.5


def _check_inv_freq(state: dict[str, torch.Tensor], cfg: RotaryLMConfig, origin: str) -> None:
    inv_freq = state.get("attn_layers.rotary_pos_emb.inv_freq")
    if inv_freq is None:
        return
    expected = 1.0 / (10000 ** (torch.arange(0, cfg.rotary_dim, 2).float() / cfg.rotary_dim))
    if cfg.rotary_dim > cfg.dim_head or not torch.allclose(inv_freq.float(), expected):
        raise UserError(f"{origin}: rotary frequencies differ from a Decoder with heads="
                        f"{cfg.heads} (base 10000, at most the head width {cfg.dim_head}); "
                        "check heads in the JSON beside the checkpoint")


def config_beside(file: Path) -> dict:
    """``<checkpoint stem>.json`` or ``config.json`` beside the file, or {} if neither."""
    for candidate in (file.with_suffix(".json"), file.parent / "config.json"):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text())
            except (OSError, ValueError) as e:
                raise UserError(f"{candidate}: not a JSON config ({e})") from None
            if isinstance(data, dict) and any(k in data for k in _JSON_FIELDS):
                return {k: data[k] for k in _JSON_FIELDS if k in data}
    return {}


def config_json(cfg: RotaryLMConfig) -> dict:
    """The JSON written beside a checkpoint that we train (read back by :func:`config_beside`):
    the sizes, and that its norms' ``gamma`` is stored minus one (the 1.36+ layout)."""
    sizes = {k: v for k, v in dataclasses.asdict(cfg).items() if k in _CONFIG_FIELDS}
    return {**sizes, "norm_unit_offset": True}


def to_xtransformers_state(model: RotaryLM) -> dict[str, torch.Tensor]:
    """``model``'s weights under x-transformers' names, in the current layout (1.36+: ``gamma``
    norms stored minus one, neighbouring rotary pairs; :func:`config_json` says so beside the
    file), with the rotary ``inv_freq`` buffer: the inverse of :func:`load_rotary_state` for
    a model we trained (interleaved pairs, no norm or logits biases). x-transformers 1.36 or
    later loads it into ``TransformerWrapper(..., Decoder(..., rotary_pos_emb=True))``.

    Raises:
        ValueError: a model in another layout (halves, biases: loaded from an old release).
    """
    cfg = model.cfg
    if cfg.rotary_pairs != "interleaved" or cfg.norm_bias or cfg.logits_bias:
        raise ValueError("only a model in the 1.31+ layout (interleaved rotary pairs, no norm "
                         "or logits biases) is written back as x-transformers weights")
    out = {"token_emb.emb.weight": model.token_emb.weight,
           "to_logits.weight": model.to_logits.weight,
           "attn_layers.final_norm.gamma": model.final_norm.weight - 1.0,
           "attn_layers.rotary_pos_emb.inv_freq": 1.0 / (10000 ** (
               torch.arange(0, cfg.rotary_dim, 2).float() / cfg.rotary_dim))}
    for i, block in enumerate(model.blocks):
        a, f = f"attn_layers.layers.{2 * i}", f"attn_layers.layers.{2 * i + 1}"
        out[f"{a}.0.0.gamma"] = block.attn_norm.weight - 1.0
        for name in ("to_q", "to_k", "to_v", "to_out"):
            out[f"{a}.1.{name}.weight"] = getattr(block, name).weight
        out[f"{f}.0.0.gamma"] = block.ff_norm.weight - 1.0
        for part in ("weight", "bias"):
            out[f"{f}.1.ff.0.0.{part}"] = getattr(block.ff_in, part)
            out[f"{f}.1.ff.2.{part}"] = getattr(block.ff_out, part)
    return {k: v.detach().clone() for k, v in out.items()}
