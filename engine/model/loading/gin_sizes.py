"""Read the few EnCodecMAE sizes we need from a hub ``config.gin``, without gin itself.

Only two binding forms occur in the released configs and are understood here::

    MODEL_DIM=768                                   # macro
    encoder/tasks.models.transformers.MultiHeadAttention:   # block of bindings
        num_heads=%NUM_ENCODER_HEADS
    tasks.models.transformers.SinusoidalPositionalEmbeddings.embedding_dim = %MODEL_DIM

Values are Python literals or ``%MACRO`` references.
"""

from __future__ import annotations

import ast
import re

_MACRO = re.compile(r"^([A-Z_][A-Z0-9_]*)\s*=\s*(.+)$")
_BINDING = re.compile(r"^([\w./]+)\.(\w+)\s*=\s*(.+)$")
_BLOCK = re.compile(r"^([\w./]+)\s*:\s*$")
_ITEM = re.compile(r"^(\w+)\s*=\s*(.+)$")


def parse_gin(text: str) -> dict[str, object]:
    """Flatten a gin file to ``{"scope/name.param": value, "MACRO": value}``.

    Example: the block above yields
    ``{"encoder/tasks.models.transformers.MultiHeadAttention.num_heads": 12, ...}``.
    """
    raw: dict[str, str] = {}
    block: str | None = None
    for line in text.splitlines():
        line = line.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indented = line[0].isspace()
        line = line.strip()
        if indented and block and (m := _ITEM.match(line)):
            raw[f"{block}.{m.group(1)}"] = m.group(2)
            continue
        block = None
        if m := _BLOCK.match(line):
            block = m.group(1)
        elif m := _MACRO.match(line):
            raw[m.group(1)] = m.group(2)
        elif m := _BINDING.match(line):
            raw[f"{m.group(1)}.{m.group(2)}"] = m.group(3)
    return {k: _resolve(v, raw, 0) for k, v in raw.items()}


def _resolve(value: str, raw: dict[str, str], depth: int) -> object:
    value = value.strip()
    if value.startswith("%") and depth < 10:
        return _resolve(raw.get(value[1:], "None"), raw, depth + 1)
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value  # a configurable reference such as @torch.optim.AdamW


def find_binding(bindings: dict[str, object], suffix: str, default: object = None) -> object:
    """The value of the one binding whose key ends with ``suffix`` (e.g.
    ``"encoder/tasks.models.transformers.MultiHeadAttention.num_heads"`` matches suffix
    ``"encoder/" ...`` forms with or without the ``encodecmae.`` module prefix)."""
    hits = [v for k, v in bindings.items() if k.endswith(suffix)]
    return hits[0] if hits else default
