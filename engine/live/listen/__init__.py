"""Play along: a live audio input as a prompt slot (``--input``, ``/prompt/listen``).

* :mod:`~engine.live.listen.capture`: the input — a PortAudio capture stream (JACK input
  ports where the host API is JACK) or a looping file (``--input file:PATH``) — writing into
  a preallocated ring of the latest seconds; its callback only copies.
* :mod:`~engine.live.listen.updater`: the worker that, every update interval, embeds the
  latest seconds of input with EnCodecMAE (below generation's priority) and submits the
  vector to each listening slot as a logged ``/prompt/slot`` control, so a recording replays
  without the input.
"""
