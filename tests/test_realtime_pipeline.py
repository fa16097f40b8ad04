"""Sample ring, paced null sink, and generator → decoder → sink as the engine runs them."""

import os
import time

import numpy as np
import pytest
import torch
from conftest import tiny_random_model

from engine import FRAME_RATE, SAMPLE_RATE
from engine.errors import UserError
from engine.live.audio.ringbuffer import SampleRing
from engine.live.audio.sinks import MemorySink, NullSink
from engine.live.control_input import initial_controls
from engine.live.controls import ControlEvent
from engine.live.decoder import StreamingDecoder
from engine.live.generator import RollingGenerator
from engine.live.pipeline import Pipeline, pinned_cpus
from engine.model.codec import random_codec
from engine.model.reference import tokens_to_audio


def test_sample_ring_wraps_without_losing_or_reordering():
    rng = np.random.RandomState(0)
    ring = SampleRing(37)
    source = rng.randn(5000).astype(np.float32)
    out, pos = [], 0
    while len(out) < 4000:
        n = rng.randint(0, 30)
        pos += ring.write(source[pos : pos + n])
        buf = np.full((rng.randint(1, 25), 1), 9.0, np.float32)
        got = ring.read_into(buf)
        assert (buf[got:] == 0).all()  # the underrun part is silence
        out.extend(buf[:got, 0])
    assert np.array_equal(np.array(out), source[: len(out)])


def test_null_sink_plays_in_real_time_and_counts_underruns():
    sink = NullSink(buffer_s=0.2, block=480, prefill_s=0.1)
    block = np.zeros(2400, np.float32)  # 0.1 s
    start = time.perf_counter()
    for _ in range(10):  # 1 s of audio, written as fast as the sink lets us
        sink.write(block)
    written_in = time.perf_counter() - start
    assert 0.6 < written_in < 1.2  # back-pressure: at most the buffer ahead of real time
    assert sink.underruns == 0
    time.sleep(0.5)  # the producer stops: the sink starves
    sink.close()
    assert sink.underruns >= 10
    assert abs(sink.consumed - 24000) <= 480


@pytest.mark.parametrize("mode,hop,chunk", [("fast", 5, 3), ("exact", None, 1),
                                            ("fast", 1, 7)])
def test_pipeline_audio_equals_offline_decode_of_its_tokens(mode, hop, chunk):
    model = tiny_random_model()
    codec = random_codec(0)
    rng = np.random.RandomState(1)
    c = initial_controls([rng.randn(128).astype(np.float32) for _ in range(2)], glide=0.05)
    gen = RollingGenerator(model, c, window=16, mode=mode, hop=hop, seed=5)
    gen.schedule(20, [ControlEvent("/morph", (1.0,))])
    rows, sink = [], MemorySink()
    pipe = Pipeline(gen, StreamingDecoder(codec.model), sink, decode_chunk=chunk,
                    on_row=lambda frame, row: rows.append((frame, row)))
    pipe.run(60)
    gen.close()
    assert [f for f, _ in rows] == list(range(60))
    tokens = torch.stack([r for _, r in rows])
    offline = tokens_to_audio(codec, tokens)
    assert sink.audio.shape == offline.shape == ((60 - 7) * 320,)
    assert np.abs(sink.audio - offline).max() < 1e-5
    assert pipe.stats.samples_out == offline.size and pipe.stats.frames == 60
    # Sound, not silence: equal to the offline decode would also hold for two silent outputs.
    seconds = sink.audio.size / SAMPLE_RATE
    assert seconds == pytest.approx((60 - 7) / FRAME_RATE)
    assert np.isfinite(sink.audio).all() and np.sqrt(np.mean(sink.audio ** 2)) > 0.01


def test_a_paced_pipeline_stays_its_lead_ahead_of_playback_and_plays_the_same_audio():
    """``lead_s``: one frame at a time as the sink plays, never more than the lead ahead
    (unpaced, this fast model would run the ring, the queue and a chunk ahead: ~0.43 s);
    writing the sink a frame at a time changes no sample."""
    model, codec = tiny_random_model(), random_codec(0)
    rng = np.random.RandomState(1)
    c = initial_controls([rng.randn(128).astype(np.float32) for _ in range(2)])
    gen = RollingGenerator(model, c, window=16, mode="fast", hop=5, seed=5)
    sink = NullSink(buffer_s=0.2, block=512, prefill_s=0.1)
    rows, audio, lead_s = [], [], 0.25
    pipe = Pipeline(gen, StreamingDecoder(codec.model), sink, decode_chunk=8, lead_s=lead_s,
                    buffered_s=lambda: sink.buffered_s,
                    on_row=lambda frame, row: rows.append(row),
                    on_audio=lambda block, start: audio.append(block.copy()))
    pipe.start(150)
    leads = []
    while pipe._gen_thread.is_alive():  # frames generated (after the undelay's 7) less played
        leads.append((max(0, gen.t - 7) * 320 - sink.consumed) / SAMPLE_RATE)
        time.sleep(0.003)
    pipe.join()
    sink.close()
    gen.close()
    assert max(leads) <= lead_s + 2 / FRAME_RATE, max(leads)
    offline = tokens_to_audio(codec, torch.stack(rows))
    assert np.abs(np.concatenate(audio) - offline).max() < 1e-5


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="--pin-threads needs Linux and two CPUs")
def test_pinned_threads_run_on_their_cpus_and_change_no_token():
    """``--pin-threads``: the generator on the first CPU, the decoder and the fast mode's
    re-prefill worker on the second; the rows are those of an unpinned run."""
    model = tiny_random_model()
    codec = random_codec(0)
    rng = np.random.RandomState(1)
    prompts = [rng.randn(128).astype(np.float32) for _ in range(2)]
    gen_cpu, dec_cpu = pinned_cpus()
    runs, seen = [], {}

    class Sink(MemorySink):
        def write(self, block):
            seen["decoder"] = os.sched_getaffinity(0)
            super().write(block)

    for pin in (None, (gen_cpu, dec_cpu)):
        gen = RollingGenerator(model, initial_controls(prompts, glide=0.05), window=16,
                               mode="fast", hop=4, seed=5)
        gen.schedule(20, [ControlEvent("/morph", (1.0,))])
        rows = []

        def on_row(frame, row, rows=rows):
            seen["generator"] = os.sched_getaffinity(0)
            rows.append(row)

        pipe = Pipeline(gen, StreamingDecoder(codec.model), Sink(), decode_chunk=4,
                        on_row=on_row, pin=pin)
        pipe.run(50)
        worker = gen.reprefill._executor.submit(os.sched_getaffinity, 0).result()
        gen.close()
        runs.append(torch.stack(rows))
    assert seen == {"generator": {gen_cpu}, "decoder": {dec_cpu}}  # the pinned run's
    assert worker == {dec_cpu}
    assert torch.equal(runs[0], runs[1])


def test_pinning_is_refused_with_one_cpu(monkeypatch):
    if not hasattr(os, "sched_setaffinity"):
        with pytest.raises(UserError, match="needs Linux"):
            pinned_cpus()
        return
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    with pytest.raises(UserError, match="needs two CPUs; this process may use 1"):
        pinned_cpus()
