"""encodecgpt-live engine: play EnCodecGPT live, record and replay sessions, train models.

Folders, dependencies pointing one way (``model ← live ← session ← cli``; ``train → model``):

* :mod:`engine.model` — the networks and their files: EnCodec (``codec``), the delay pattern
  (``patterns``), EnCodecGPT (``encodecgpt``), EnCodecMAE prompts (``encodecmae``),
  sampling, checkpoints and hub loading, and the offline reference generators
  (``reference``: the original code's loops, kept as the ground truth).
* :mod:`engine.live` — the real-time path: controls, the rolling generator and its KV step,
  the streaming decoder, the two-thread pipeline, sinks and the sound device, the engine.
* :mod:`engine.session` — recording a live session, and replay / recover / plot.
* :mod:`engine.train` — token caches (``train.data``) and the Lightning training task.
* :mod:`engine.cli` — the command lines (``run_engine.py``), which wire the pieces together.

Where things happen, and on which thread:

* **A frame is generated** in :meth:`engine.live.generator.RollingGenerator.step`, called
  by the *generator* thread of :class:`engine.live.pipeline.Pipeline`: it applies the
  controls queued for this frame boundary, runs the model on ``[prompt, window rows]`` and
  samples one delayed token row ``[Q]``.
* **An OSC message becomes a control** in :mod:`osc.dispatcher` (``OSCDispatcher.handle``),
  called by the *OSC* thread of :class:`osc.server.OSCServer`: the datagram is checked
  against the address table (:mod:`osc.addresses`), and a bundle of control events is
  validated as a whole and queued with :meth:`engine.live.engine.LiveEngine.submit`.
* **Audio reaches the device** in :class:`engine.live.audio.sound_device.AudioOut`: the *decoder*
  thread of the pipeline turns rows into frames and 24 kHz blocks and writes them into a
  preallocated ring; PortAudio's *audio callback* only copies from that ring.

Other threads: the re-prefill worker (``fast`` mode), the prompt loader (``/prompt/load``),
the recorder (the only thread that writes session files), the device watchdog.
"""

SAMPLE_RATE = 24_000
FRAME_RATE = 75
HOP_LENGTH = 320
