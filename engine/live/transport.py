"""Play, pause and panic: what the performer's transport buttons do to the live path.

* play: the generator runs again and a device fades in;
* pause: a device fades out (without waiting), the generator stops at the next frame, and
  the listeners hear of it (a recording being stopped finishes then: no frame will come);
* panic: silence now: pause, wait for the fade, drop the buffered audio, and queue a
  ``/reset`` so the window starts afresh when play resumes.

Threading: called from the OSC thread (or the thread that owns the engine); they only set
events and flags that the generator thread and the audio callback read.
"""

from __future__ import annotations

from engine.live.audio.output import LiveOutput
from engine.live.controls import ControlEvent
from engine.live.generator import RollingGenerator
from engine.live.listeners import Listeners
from engine.live.pipeline import Pipeline


class Transport:
    """Play / pause / panic over ``pipeline`` (generation), ``output`` (fades) and
    ``generator`` (window reset); ``listeners`` hear every pause."""

    def __init__(self, pipeline: Pipeline, output: LiveOutput, generator: RollingGenerator,
                 listeners: Listeners):
        self.pipeline, self.output = pipeline, output
        self.generator, self.listeners = generator, listeners
        self.playing = False

    def play(self) -> None:
        self.pipeline.running.set()
        self.output.fade_in()
        self.playing = True

    def pause(self) -> None:
        self.output.fade_out(wait=False)
        self.pipeline.running.clear()
        self.playing = False
        self.listeners.on_pause()

    def panic(self) -> None:
        """Silence now: fade out, drop buffered audio, reset the window, pause."""
        self.pause()
        self.output.fade_out(wait=True)
        self.output.clear()
        self.generator.submit([ControlEvent("/reset")])
