"""Run a step that lives in static buffers: replayed from a CUDA graph, or called as it is.

A *step* here is a callable with no arguments and no result that reads and writes tensors
whose addresses never change (the buffers of
:class:`engine.live.step.static_window.StaticWindowStep`).
That is what a CUDA graph records: the kernels and the addresses, not the values, so new
values written into the inputs between replays are seen by the next replay.

Capture protocol (``torch.cuda.graphs``): a few warm-up calls on a side stream (lazy
allocations, cuBLAS workspaces, autotuning), then one call recorded, after which the buffers
the warm-up moved are put back with ``restore`` so the first real step starts from the state
the caller set. A seeded device generator that the step draws from is registered with the
graph; each replay then advances it as the recorded call did, so ``manual_seed`` and
``get_state`` / ``set_state`` keep working between replays.

The graph is captured on the thread that builds the runner, before the generator thread
starts (``capture_error_mode="thread_local"``: other threads' CUDA work does not break it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


class GraphRunner:
    """Call ``fn`` eagerly, or capture it once and replay it.

    Args:
        fn: the step (no arguments; reads and writes static buffers only).
        device: where ``fn``'s tensors live; graphs need a CUDA device.
        graphs: True = CUDA graph replay; False = call ``fn`` (every device, and the path the
            CPU tests run).
        generator: a device generator ``fn`` draws from (registered with the graph).
        snapshot: returns the mutable state before warm-up; ``restore`` puts it back.
        restore: see ``snapshot``.
        warmup: eager calls before capture (also run with ``graphs=False`` on CUDA, so the
            first real step costs what the others do).
        stream: the CUDA stream the step runs on (default: a new one).

    Attributes:
        startup_s: seconds spent on warm-up and capture.
    """

    def __init__(self, fn: Callable[[], None], device: torch.device, *, graphs: bool,
                 generator: torch.Generator | None = None,
                 snapshot: Callable[[], object] | None = None,
                 restore: Callable[[object], None] | None = None,
                 warmup: int = 3, stream: torch.cuda.Stream | None = None):
        if graphs and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
        self.fn, self.device = fn, device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stream = None
        if device.type == "cuda":
            self.stream = stream or torch.cuda.Stream(device)
        start = time.perf_counter()
        if self.stream is not None and (warmup or graphs):
            saved = snapshot() if snapshot else None
            self._warm_up(warmup)
            if graphs:
                self._capture(generator)
            if restore:
                restore(saved)
            torch.cuda.synchronize(device)
        self.startup_s = time.perf_counter() - start

    def _warm_up(self, calls: int) -> None:
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            for _ in range(calls):
                self.fn()
        torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def _capture(self, generator: torch.Generator | None) -> None:
        graph = torch.cuda.CUDAGraph()
        if generator is not None:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            self.fn()
        self.graph = graph

    def __call__(self) -> None:
        """One step: a graph replay or a call, queued on the runner's stream (no sync)."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self.fn()
