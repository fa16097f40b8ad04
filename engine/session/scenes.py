"""Scenes: a performer's presets, saved and recalled over OSC (``/scene/save s``,
``/scene/recall s``).

A scene is a small JSON file ``SCENES_DIR/<name>.json`` (``--scenes-dir``, default
``./scenes`` beside ``./sessions``) holding what the performer set: every slot (its source
and its vector ``[P]``, float32 values written exactly; for MusicGen, its text), the mix
weights, temperature, top-k, top-p, glide and gain — the targets, not a glide's halfway point.
A MusicGen scene's texts are encoded (T5, cached by text) before the bundle is submitted, so
the generator never runs T5 at the frame that recalls it. Recalling submits it as one
bundle (slots, then glide, then the rest), so it takes effect at one frame, is logged like any
control (and so replays), and the mix, temperature and top-p glide to it with the scene's
glide time. (``--preset`` already names a model size, hence "scene".)

Threading: :meth:`SceneStore.save` and :meth:`~SceneStore.recall` run on the OSC thread; they
read a copy of the generator's controls and submit through the engine's thread-safe inbox.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.atomic_write import write_json_atomic
from engine.errors import UserError
from engine.live.controls import ControlEvent, ControlState
from engine.session.recorder import clean_session_name

SCENE_FORMAT = "encodecgpt-live scene"
SCENE_VERSION = 1


def scene_from_controls(controls: ControlState, sources: dict[int, str]) -> dict:
    """The JSON data of a scene: the targets of ``controls`` and where each slot came from."""
    c = controls
    return {"format": SCENE_FORMAT, "format_version": SCENE_VERSION,
            "num_slots": c.num_slots,
            "slots": [_slot_json(vec, sources.get(i, "")) for i, vec in enumerate(c.slots)],
            "weights": [float(w) for w in c.target_weights],
            "temperature": float(c.target_temperature), "top_k": int(c.top_k),
            "top_p": float(c.target_top_p), "glide": float(c.glide),
            "gain_db": float(c.gain_db)}


def _slot_json(slot, source: str) -> dict | None:
    if slot is None:
        return None
    if isinstance(slot, str):  # MusicGen: a text
        return {"source": source, "text": slot}
    return {"source": source, "vector": [float(v) for v in slot]}


def _slot_event(i: int, slot: dict) -> ControlEvent:
    if "text" in slot:
        return ControlEvent("/prompt/slot/text", (i, str(slot["text"])))
    return ControlEvent("/prompt/slot", (i, np.asarray(slot["vector"], np.float32)))


def scene_events(scene: dict, num_slots: int) -> list[ControlEvent]:
    """The control bundle that recalls ``scene`` on an engine with ``num_slots`` slots.

    Raises:
        UserError: not a scene file, or a scene that uses more slots than there are.
    """
    if scene.get("format") != SCENE_FORMAT:
        raise UserError("not a scene file")
    slots = scene["slots"]
    used = [i for i, s in enumerate(slots) if s is not None]
    if used and used[-1] >= num_slots:
        raise UserError(f"the scene fills slot {used[-1]}; this engine has {num_slots} "
                        "(--slots)")
    events = [_slot_event(i, slots[i]) for i in used]
    weights = scene["weights"][:num_slots]
    events += [ControlEvent("/glide", (scene["glide"],)),
               ControlEvent("/mix", tuple(weights)),
               ControlEvent("/temperature", (scene["temperature"],)),
               ControlEvent("/topk", (scene["top_k"],)),
               ControlEvent("/topp", (scene["top_p"],)),
               ControlEvent("/gain", (scene.get("gain_db", 0.0),))]
    return events


class SceneStore:
    """Save and recall scenes of ``engine`` (a :class:`~engine.live.engine.LiveEngine`) in
    ``folder``; ``log`` gets one console line per save or recall."""

    def __init__(self, engine, folder: Path, log: Callable[[str], None]):
        self.engine, self.folder, self.log = engine, Path(folder), log

    def path(self, name: str) -> Path:
        """The scene file of ``name`` (refused if it has '/', '\\' or '..')."""
        if self.engine.family == "rotary":
            raise UserError("scenes hold prompt slots and a mix, which the rotary family does "
                            "not have (it is unconditional)")
        if not name:
            raise UserError("a scene needs a name")
        return self.folder / f"{clean_session_name(name)}.json"

    def save(self, name: str) -> Path:
        """Write the current scene (an existing one of that name is replaced)."""
        path = self.path(name)
        scene = scene_from_controls(self.engine.generator.controls.copy(),
                                    dict(self.engine.slot_sources))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, scene)
        except OSError as e:
            raise UserError(f"{path}: cannot write the scene ({e.strerror or e})") from None
        self.log(f"scene: saved {path}")
        return path

    def recall(self, name: str) -> Path:
        """Submit the scene ``name`` as one bundle (it glides with its own glide time)."""
        path = self.path(name)
        try:
            scene = json.loads(path.read_text())
            events = scene_events(scene, self.engine.num_slots)
        except FileNotFoundError:
            raise UserError(f"no scene {name!r} in {self.folder}") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a readable scene ({e})") from None
        texts = [e.values[1] for e in events if e.address == "/prompt/slot/text"]
        text = getattr(self.engine.generator, "text", None)
        if texts and text is not None:  # MusicGen: into the cache first (the OSC thread)
            try:
                for t in texts:
                    text.encode(t)
            except Exception as e:  # a tokenizer or T5 failure: refused, state kept
                raise UserError(f"{path}: a text could not be encoded ({e})") from None
        self.engine.submit(events)
        for e in events:
            if e.address == "/prompt/slot/text" and self.engine.texts is not None:
                self.engine.texts.texts[e.values[0]] = e.values[1]
        for i, slot in enumerate(scene["slots"]):
            if slot is not None:
                self.engine.slot_sources[i] = slot["source"] or f"scene {name}"
        self.log(f"scene: recalled {path}")
        return path
