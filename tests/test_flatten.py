"""The flatten pattern (NSynth-guitar tutorial): layout, inverse, streaming inverse, and the
streaming decoder fed from it equal to the offline decode."""

import torch

from engine.live.decoder import StreamingDecoder
from engine.model.codec import random_codec
from engine.model.tokens.patterns import StreamingUnflatten, flatten_codes, unflatten_tokens


def test_layout_is_frame_by_frame():
    codes = torch.tensor([[[10, 11, 12], [20, 21, 22]]])  # [1, Q=2, T=3]
    assert flatten_codes(codes).tolist() == [[10, 20, 11, 21, 12, 22]]


def test_round_trip_and_unfinished_frame_dropped():
    codes = torch.randint(0, 1024, (3, 4, 17))
    flat = flatten_codes(codes)
    assert torch.equal(unflatten_tokens(flat, 4), codes)
    assert torch.equal(unflatten_tokens(flat[:, :-1], 4), codes[..., :-1])


def test_streaming_unflatten_equals_offline():
    codes = torch.randint(0, 1024, (1, 2, 25))
    stream = StreamingUnflatten(2)
    frames = [f for tok in flatten_codes(codes)[0] if (f := stream.push(int(tok))) is not None]
    assert torch.equal(torch.stack(frames, dim=1)[None], codes)


def test_streaming_decoder_from_flat_tokens_equals_offline_decode():
    codec = random_codec(0)
    codes = torch.randint(0, 1024, (1, 2, 40))
    flat = flatten_codes(codes)[0]
    stream, decoder, audio = StreamingUnflatten(2), StreamingDecoder(codec.model), []
    for tok in flat:
        frame = stream.push(int(tok))
        if frame is not None:
            audio.append(decoder.push(frame[None, :, None]))
    offline = codec.decode(unflatten_tokens(flat[None], 2))
    streamed = torch.cat(audio, dim=-1)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-5
