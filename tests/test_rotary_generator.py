"""The rotary generator in the live pipeline: frames through the family's streaming
un-flattener and the streaming decoder equal the offline decode; a re-prime continues exactly
as a generator started on that prefix."""

import numpy as np
import torch

from engine.live.audio.sinks import MemorySink
from engine.live.decoder import StreamingDecoder
from engine.live.pipeline import Pipeline
from engine.live.rotary.generator import RotaryGenerator
from engine.model.codec import random_codec
from engine.model.rotary_lm import RotaryLM, RotaryLMConfig


def tiny_rotary(seed: int = 0) -> RotaryLM:
    torch.manual_seed(seed)
    return RotaryLM(RotaryLMConfig(dim=64, depth=2, heads=2, dim_head=32, rotary_dim=16,
                                   max_seq_len=24)).eval()


def test_pipeline_audio_equals_offline_decode_of_the_generated_codes():
    model, codec = tiny_rotary(), random_codec(0)
    offline_gen = RotaryGenerator(model, greedy=True)
    codes = torch.stack([offline_gen.step() for _ in range(30)], dim=1)[None]  # [1, Q, T]
    sink = MemorySink()
    Pipeline(RotaryGenerator(model, greedy=True), StreamingDecoder(codec.model), sink,
             decode_chunk=4, threads=None).run(30)
    offline = codec.decode(codes)[0, 0].numpy()
    assert sink.audio.shape == offline.shape
    assert np.abs(sink.audio - offline).max() < 1e-5


def test_reprime_continues_like_a_fresh_start_on_the_prefix():
    model = tiny_rotary(1)
    prefix = torch.randint(0, 1024, (2, 30), generator=torch.Generator().manual_seed(2))
    playing = RotaryGenerator(model, greedy=True)
    for _ in range(17):  # past the window: the cache has slid
        playing.step()
    playing.prime(prefix)
    fresh = RotaryGenerator(model, greedy=True, prefix=prefix)
    assert [playing.step().tolist() for _ in range(20)] == [fresh.step().tolist()
                                                            for _ in range(20)]
