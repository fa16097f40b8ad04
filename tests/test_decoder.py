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


# -- a non-causal codec: MusicGen's EnCodec 32 kHz -------------------------------------------

@pytest.fixture(scope="module")
def codec32():
    from engine.model.musicgen.tiny import random_musicgen

    return random_musicgen("tiny", 0).audio_encoder


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_non_causal_stream_equals_offline_but_the_held_back_lookahead(codec32, chunk):
    """Every sample the stream emits equals the offline decode; the stream stays
    ``lookahead_frames`` behind (4 frames = 80 ms at 50 Hz), in whole 640-sample frames."""
    codes = torch.from_numpy(np.random.default_rng(chunk).integers(0, 2048, (1, 4, 60)))
    with torch.inference_mode():
        offline = codec32.decode(codes[None], [None]).audio_values  # [1, 1, 60 * 640]
    decoder = StreamingDecoder(codec32)
    assert (decoder.hop, decoder.sample_rate) == (640, 32_000)
    assert decoder.lookahead_samples == 2402 and decoder.lookahead_frames == 4
    pushes = [decoder.push(codes[..., s:s + chunk]) for s in range(0, 60, chunk)]
    assert all(p.shape[-1] % 640 == 0 for p in pushes)
    streamed = torch.cat(pushes, dim=-1)
    assert streamed.shape[-1] == (60 - 4) * 640
    assert (streamed - offline[..., :streamed.shape[-1]]).abs().max().item() <= 1e-5
    assert offline.abs().max().item() > 1e-2  # not a silent codec


def test_non_causal_stream_continues_from_its_state(codec32):
    """get_state mid-stream (a session's decoder mark), set_state into a fresh decoder: the
    continuation equals the uninterrupted stream (the part-frame held back included)."""
    codes = torch.from_numpy(np.random.default_rng(5).integers(0, 2048, (1, 4, 40)))
    whole = StreamingDecoder(codec32)
    first = [whole.push(codes[..., :13])]
    state = whole.get_state()
    assert state["held"] is not None and 0 < state["held"].shape[-1] < 640
    rest = whole.push(codes[..., 13:])
    other = StreamingDecoder(codec32)
    other.set_state(state)
    assert torch.equal(other.push(codes[..., 13:]), rest)
    assert first[0].shape[-1] == (13 - 4) * 640
