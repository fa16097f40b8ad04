"""The decoder's crossfade into a primed continuation, on the fixtures' seeded codec and two
tones: the seam's largest sample step stays within the signal's own, and after the ramp the
output is the primed recording's own continuation as the codec decodes it."""

from __future__ import annotations

import numpy as np
import torch
from fixtures import needs_fixtures
from test_priming import original_priming

from engine import HOP_LENGTH, SAMPLE_RATE
from engine.live.audio.seam import CROSSFADE_FRAMES, Crossfade
from engine.live.decoder import StreamingDecoder
from engine.model.tokens.patterns import apply_delay

Q = 8


def _tone_codes(codec, hz: float, seconds: float) -> torch.Tensor:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wav = (0.4 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return codec.encode(torch.from_numpy(wav)[None, None], Q)[0]  # [Q, T]


def _play(decoder, fade, rows, chunk=4):
    """Rows through the new undelay into ``fade`` (then the decoder) in chunks → audio."""
    frames = [f for r in rows if (f := fade.undelay.push(r)) is not None]
    out = []
    for i in range(0, len(frames), chunk):
        codes = torch.stack(frames[i:i + chunk], dim=1)[None]
        out.append((decoder.push(codes) if fade.done else fade.push(codes))[0, 0])
    return torch.cat(out).numpy()


@needs_fixtures
def test_crossfade_seam_is_within_the_signals_own_steps(loaded):
    codec = loaded.codec
    a, b = _tone_codes(codec, 220.0, 1.0), _tone_codes(codec, 330.0, 2.0)
    primed = original_priming(b[:, :100])  # [100, Q]
    after = apply_delay(b[None])[0, :, 100:140].T  # the rows that continue them

    decoder = StreamingDecoder(codec.model)
    old = decoder.push(a[None, :, :60])[0, 0].numpy()
    new = _play(decoder, Crossfade(decoder, primed.numpy()), after)
    out = np.concatenate([old, new])
    seam = old.size
    steps = np.abs(np.diff(out))
    region = np.s_[seam - 2 * HOP_LENGTH: seam + (CROSSFADE_FRAMES + 2) * HOP_LENGTH]
    own = np.delete(steps, region).max()
    assert steps[region].max() <= own


    # after the ramp it is the recording's own continuation: B's frames 93.. decoded by a
    # stream that started at frame 77 (the 16 warm-up frames before the first new one)
    ref = codec.decode(b[None, :, 77:133])[0, 0].numpy()[16 * HOP_LENGTH:]
    faded = CROSSFADE_FRAMES * HOP_LENGTH
    assert new.size == ref.size
    assert np.abs(new[faded:] - ref[faded:]).max() < 1e-4
