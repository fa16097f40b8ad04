"""Streaming decode proven the cached-conv way: chunked output == offline output."""

import numpy as np
import pytest
import torch
from fixtures import golden

from engine.live.decoder import FIRST_CHUNK_FRAMES, StreamingDecoder
from engine.model.codec import random_codec


def _chunked(decoder, codes, sizes):
    out, start = [], 0
    for n in sizes:
        out.append(decoder.push(codes[..., start : start + n]))
        start += n
    return torch.cat(out, dim=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_chunk_sizes_equal_offline(seed):
    codec = random_codec(seed)
    rng = np.random.default_rng(seed)
    codes = torch.from_numpy(rng.integers(0, 1024, (1, 8, 120)))
    offline = codec.decode(codes)
    sizes = []
    while sum(sizes) < 120:
        sizes.append(int(min(rng.integers(0, 12), 120 - sum(sizes))))
    streamed = _chunked(StreamingDecoder(codec.model), codes, sizes)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max().item() <= 1e-5


def test_frame_by_frame_on_reference_codes(loaded):
    codes = torch.from_numpy(golden("encodec_A.npz")["codes_6kbps"])
    decoder = StreamingDecoder(loaded.codec.model)
    got = [decoder.push(codes[..., t : t + 1]).shape[-1] for t in range(codes.shape[-1])]
    # Nothing until the first chunk is complete, then exactly one frame (320 samples) per push.
    assert got[: FIRST_CHUNK_FRAMES - 1] == [0] * (FIRST_CHUNK_FRAMES - 1)
    assert got[FIRST_CHUNK_FRAMES - 1] == FIRST_CHUNK_FRAMES * 320
    assert set(got[FIRST_CHUNK_FRAMES:]) == {320}
    decoder.reset()
    streamed = _chunked(decoder, codes, [7] + [1] * 293)
    reference = golden("encodec_A.npz")["decoded_6kbps"]
    assert np.abs(streamed.numpy() - reference).max() < 1e-4


def test_reset_starts_a_new_stream():
    codec = random_codec(3)
    codes = torch.randint(0, 1024, (1, 8, 20))
    decoder = StreamingDecoder(codec.model)
    first = _chunked(decoder, codes, [10, 10])
    decoder.reset()
    assert torch.equal(_chunked(decoder, codes, [10, 10]), first)
