"""Streaming EnCodec decoding with carried state: chunked output == offline output.

EnCodec 24 kHz's decoder is causal, so a stream of frames can be decoded chunk by chunk if
every layer keeps what the next chunk needs:

* ``EncodecConv1d`` (stride 1, left padding ``(k − 1)·d``): the last ``(k − 1)·d`` input
  samples (its left context);
* ``EncodecConvTranspose1d`` (kernel ``2r``, stride ``r``): the ``r`` output samples that
  overlap the next chunk (offline they are trimmed on the right), without the bias, which
  the next chunk adds again;
* ``EncodecLSTM``: the ``(h, c)`` state;
* ``EncodecResnetBlock``: the states of its convolutions; ELU has none.

After ``n`` frames, output samples ``[0, 320·n)`` depend on frames ``< n`` only, so every
chunk is final when emitted. Offline decoding reflect-pads the left edge of each convolution
with the first samples of the sequence; the stream therefore waits for
:data:`FIRST_CHUNK_FRAMES` frames before its first output so the same samples are there, and
from then on emits as soon as a frame arrives. The result equals the offline decode to float
rounding (see ``tests/test_decoder.py``).

**Non-causal codecs** (MusicGen's EnCodec 32 kHz, ``use_causal_conv`` false): a stride-1
convolution pads ``P − ⌊P/2⌋`` on the left and ``⌊P/2⌋`` on the right, so its output sample
``j`` also needs ``⌊P/2⌋`` inputs after ``j``; a transposed convolution trims
``r − ⌊r/2⌋`` samples on the left. The same carried state works with each layer *lagging*:
a convolution emits ``⌊P/2⌋`` samples fewer than it has read (only at stream start, so it
lags by that much from then on), a transposed convolution drops its first ``r − ⌊r/2⌋``
samples, and a residual block holds the skip path's samples until the convolutions have
caught up. Summed over the layers and scaled to the output rate, the decoder lags
:attr:`StreamingDecoder.lookahead_samples` (2402 samples = 75 ms for the 32 kHz codec); it
emits whole frames only, so it holds back :attr:`StreamingDecoder.lookahead_frames` frames
(4 = 80 ms at 50 Hz): after ``n`` frames, the audio of frames ``< n − L`` is final. Every
emitted sample equals the offline decode; only the last ``L`` frames of a stream (which
offline decoding reflect-pads at the right edge) are never emitted.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers.models.encodec.modeling_encodec import (
    EncodecConv1d,
    EncodecConvTranspose1d,
    EncodecDecoder,
    EncodecLSTM,
    EncodecModel,
    EncodecResnetBlock,
)

from engine.live.state import StateReader

FIRST_CHUNK_FRAMES = 7  # the first conv (k = 7) reflect-pads with 6 samples after the first


class _ConvState:
    """Left context of a stride-1 convolution (causal, or lagging ``⌊P/2⌋`` samples)."""

    def __init__(self, conv: EncodecConv1d):
        if int(conv.stride) != 1:
            raise ValueError("streaming decoder expects stride-1 convolutions")
        self.conv, self.pad = conv, int(conv.padding_total)
        self.lag = 0 if conv.causal else self.pad // 2  # offline: right padding
        self.context: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.context is None and self.conv.causal:  # stream start: the offline padding
            full, y = x, self.conv(x)
        elif self.context is None:  # non-causal start: the left (reflect) padding only
            left = self.pad - self.lag
            full = self.conv._pad1d(x, (left, 0), mode=self.conv.pad_mode)
            y = self.conv.conv(full)
        else:
            full = torch.cat([self.context, x], dim=-1)
            y = self.conv.conv(full)
        self.context = full[..., full.shape[-1] - self.pad :]
        return y


class _ConvTransposeState:
    """Overlap-add of a transposed convolution across chunks, as one matrix product.

    With kernel ``2r`` and stride ``r``, input frame ``t`` writes output blocks ``t`` and
    ``t + 1`` (``r`` samples each): ``Z = xᵀ·W`` (``[B, n, C_out, 2, r]``), then block ``t``
    = ``Z[t, :, 0] + Z[t-1, :, 1]``. PyTorch's CPU kernel for these shapes goes through a
    slow im2col path (about 5 ms a chunk of 8 frames for the largest layer); the product is
    one GEMM and one add, same sums in a different order (float rounding).
    """

    def __init__(self, conv: EncodecConvTranspose1d):
        self.stride = r = conv.conv.stride[0]
        if conv.conv.kernel_size[0] != 2 * r:
            raise ValueError("streaming decoder expects kernel = 2 * stride")
        right = math.ceil(r * conv.trim_right_ratio) if conv.causal else r // 2
        self.lag = r - right  # offline trims this many samples on the left: drop them once
        weight = conv.conv.weight.detach()  # [C_in, C_out, 2r]
        self.c_out = weight.shape[1]
        self.weight = weight.reshape(weight.shape[0], -1).contiguous()  # [C_in, C_out·2r]
        bias = conv.conv.bias
        self.bias = None if bias is None else bias.detach()[None, :, None]  # [1, C_out, 1]
        self.tail: torch.Tensor | None = None  # [B, C_out, r], without the bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, n]`` → ``[B, C_out, n·r]`` final samples; keeps the overlap."""
        b, _, n = x.shape
        r = self.stride
        z = torch.matmul(x.transpose(1, 2), self.weight).view(b, n, self.c_out, 2, r)
        y = x.new_zeros(b, n + 1, self.c_out, r)
        y[:, :n] = z[:, :, :, 0]
        y[:, 1:] += z[:, :, :, 1]
        y = y.permute(0, 2, 1, 3).reshape(b, self.c_out, (n + 1) * r)  # [B, C_out, (n+1)·r]
        first = self.tail is None
        if not first:
            y[..., :r] += self.tail
        self.tail = y[..., -r:].clone()
        out = y[..., self.lag if first else 0:-r]
        return out if self.bias is None else out + self.bias


class _LSTMState:
    """EnCodec's LSTM (+ skip) over a chunk, carrying ``(h, c)`` of every layer.

    Written out rather than calling ``nn.LSTM``: on the CPU, PyTorch sends a short sequence
    to oneDNN's RNN, which re-packs the weights on every call (about twice the time of the
    plain loop below for 8 frames). The input projection of all frames is one GEMM; each
    frame then costs one ``[B, D] @ [D, 4D]`` product per layer. Gates in PyTorch's order
    (input, forget, cell, output).
    """

    def __init__(self, layer: EncodecLSTM):
        lstm = layer.lstm
        self.hidden = lstm.hidden_size
        self.weights = []  # per layer: W_ih ᵀ [D, 4D], W_hh ᵀ [D, 4D], bias [4D]
        for k in range(lstm.num_layers):
            w_ih = getattr(lstm, f"weight_ih_l{k}").detach()
            w_hh = getattr(lstm, f"weight_hh_l{k}").detach()
            bias = (getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")).detach()
            self.weights.append((w_ih.t().contiguous(), w_hh.t().contiguous(), bias))
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None  # h, c: [layers, B, D]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D, n]`` → ``[B, D, n]`` (LSTM output + input)."""
        seq = x.permute(2, 0, 1)  # [n, B, D]
        n, b, d = seq.shape
        if self.state is None:
            zeros = seq.new_zeros(len(self.weights), b, d)
            self.state = (zeros, zeros.clone())
        h_all, c_all = self.state
        new_h, new_c, inp = [], [], seq
        for k, (w_ih, w_hh, bias) in enumerate(self.weights):
            gates_in = torch.addmm(bias, inp.reshape(n * b, d), w_ih).view(n, b, 4 * d)
            h, c, outs = h_all[k], c_all[k], []
            for t in range(n):
                gates = torch.addmm(gates_in[t], h, w_hh)
                i, f, g, o = gates.chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            inp = torch.stack(outs)  # [n, B, D]
            new_h.append(h)
            new_c.append(c)
        self.state = (torch.stack(new_h), torch.stack(new_c))
        return (inp + seq).permute(1, 2, 0)


class _ResnetState:
    """Skip path + convolutions; when the convolutions lag (non-causal), the skip path's
    samples wait in ``held`` (``[B, C, lag]``) until the convolutions' output reaches them."""

    def __init__(self, block: EncodecResnetBlock):
        self.block = [_wrap(layer) for layer in block.block]
        self.shortcut = _wrap(block.shortcut)
        self.lag = sum(_lag(layer) for layer in self.block) - _lag(self.shortcut)
        self.held: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for layer in self.block:
            y = layer(y)
        skip = self.shortcut(x)
        if self.lag == 0:
            return skip + y
        if self.held is not None:
            skip = torch.cat([self.held, skip], dim=-1)
        m = y.shape[-1]
        self.held = skip[..., m:].clone()
        return skip[..., :m] + y


def _lag(layer) -> int:
    """Samples a wrapped layer's output lags its input (0 for causal layers)."""
    return getattr(layer, "lag", 0)


def _wrap(layer: nn.Module):
    if isinstance(layer, EncodecConv1d):
        return _ConvState(layer)
    if isinstance(layer, EncodecConvTranspose1d):
        return _ConvTransposeState(layer)
    if isinstance(layer, EncodecLSTM):
        return _LSTMState(layer)
    if isinstance(layer, EncodecResnetBlock):
        return _ResnetState(layer)
    if isinstance(layer, (nn.ELU, nn.Identity)):
        return layer
    raise TypeError(f"no streaming rule for {type(layer).__name__}")


_STATE_ATTRS = {_ConvState: "context", _ConvTransposeState: "tail", _LSTMState: "state"}


def _holders(layers):
    """(wrapper, attribute) of every carried state, in a fixed order (a causal codec's
    residual blocks hold nothing: its sessions' states keep their layout)."""
    for layer in layers:
        if isinstance(layer, _ResnetState):
            yield from _holders([*layer.block, layer.shortcut])
            if layer.lag:
                yield layer, "held"
        elif type(layer) in _STATE_ATTRS:
            yield layer, _STATE_ATTRS[type(layer)]


def _states(layers):
    return [getattr(obj, attr) for obj, attr in _holders(layers)]


def _to_state(value):
    """A carried value as plain state: a CPU tensor copy, an LSTM ``(h, c)`` as a list, or
    None."""
    if isinstance(value, tuple):
        return [v.to("cpu", copy=True) for v in value]
    return None if value is None else value.to("cpu", copy=True)


def _from_state(value, device: torch.device):
    if isinstance(value, list):
        return tuple(v.to(device, copy=True) for v in value)
    return None if value is None else value.to(device, copy=True)


def folded_decoder(model: EncodecModel) -> nn.Module:
    """A private copy of the decoder with weight norm folded into plain weights.

    The parametrization recomputes ``g · v / ‖v‖`` on every call, which dominates a one-frame
    decode; folding gives the same weights once.
    """
    # A fresh instance, not a deepcopy: parametrized modules share their generated class, so
    # folding a deep copy would strip the original's weight property too.
    decoder = EncodecDecoder(model.config)
    decoder.load_state_dict(model.decoder.state_dict())
    decoder.eval()
    for module in decoder.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return decoder


class StreamingDecoder:
    """Decode EnCodec codes frame by frame with carried state.

    Args:
        model: the transformers EnCodec model whose decoder and quantizer are used.
        device: where the decoder runs (a private copy of its weights is placed there; the
            carried state stays there too). Codes come in and audio goes out on the CPU:
            one device→host copy per decoded chunk. On CUDA the decoder has its own stream.

    Call :meth:`push` with ``[B, Q, n]`` codes (any ``n >= 0``); it returns the audio that is
    now final, ``[B, 1, hop·m]`` (hop = 320 at 24 kHz, 640 at 32 kHz). The first call(s)
    return nothing until :data:`FIRST_CHUNK_FRAMES` frames have arrived; a non-causal codec's
    stream then stays :attr:`lookahead_frames` frames behind the codes pushed (see the
    module docstring). :meth:`reset` starts a new stream.
    """

    def __init__(self, model: EncodecModel, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.hop = math.prod(model.config.upsampling_ratios)  # samples per frame
        self.sample_rate = int(model.config.sampling_rate)
        self.quantizer = model.quantizer
        if self.device.type != "cpu":  # a copy: the codec's own quantizer encodes on the CPU
            self.quantizer = copy.deepcopy(model.quantizer).to(self.device)
        self.decoder = folded_decoder(model).to(self.device)
        self.stream = None
        if self.device.type == "cuda":
            self.stream = torch.cuda.Stream(self.device)
            self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the weights' copy
        self.reset()

    def fork(self) -> StreamingDecoder:
        """Another stream over the same weights (the folded modules are shared; they hold no
        stream state: the wrappers do), fresh. CPU only: on CUDA a stream owns its CUDA
        stream too."""
        if self.device.type != "cpu":
            raise ValueError("fork() is for CPU decoders")
        other = object.__new__(StreamingDecoder)
        other.device, other.quantizer, other.decoder, other.stream = (
            self.device, self.quantizer, self.decoder, None)
        other.hop, other.sample_rate = self.hop, self.sample_rate
        other.reset()
        return other

    def reset(self) -> None:
        self.layers = [_wrap(layer) for layer in self.decoder.layers]
        self.pending: torch.Tensor | None = None  # codes held back at stream start
        self.started = False
        self.held: torch.Tensor | None = None  # [B, 1, < hop] audio short of a whole frame
        self.lookahead_samples = _output_lag(self.layers)

    @property
    def lookahead_frames(self) -> int:
        """Frames the emitted audio stays behind the codes pushed (0: causal codec)."""
        return math.ceil(self.lookahead_samples / self.hop)

    def get_state(self) -> dict:
        """The carried state (copies; see :mod:`engine.live.state`): ``layers`` — per carrying
        layer in a fixed order, a conv context / transposed-conv tail ``[B, C, n]``, an LSTM
        ``[h, c]`` (each ``[layers, B, C]``) or ``None`` before the first chunk; ``pending`` —
        the codes ``[B, Q, n]`` held back at stream start, or ``None``; ``started``."""
        state = {"layers": [_to_state(v) for v in _states(self.layers)],
                 "pending": _to_state(self.pending), "started": self.started}
        if self.lookahead_samples:  # a non-causal codec: the part-frame of audio held back
            state["held"] = _to_state(self.held)
        return state

    def set_state(self, state: dict) -> None:
        """Continue a stream from :meth:`get_state` (of a decoder for the same codec).

        Raises:
            ValueError: a missing or unused key, or layers that do not fit this decoder.
        """
        with StateReader(state, "decoder") as s:
            layers, pending, started = s.pop("layers"), s.pop("pending"), s.pop("started")
            held = s.pop("held") if self.lookahead_samples else None
        carried = len(list(_holders(self.layers)))
        if len(layers) != carried:
            raise ValueError(f"decoder state has {len(layers)} layer states, this decoder "
                             f"carries {carried}")
        self.reset()
        for (obj, attr), value in zip(_holders(self.layers), layers, strict=True):
            setattr(obj, attr, _from_state(value, self.device))
        cpu = torch.device("cpu")
        self.pending, self.started = _from_state(pending, cpu), bool(started)
        self.held = _from_state(held, self.device)

    def warm_up(self, chunk_frames: Iterable[int], num_q: int) -> float:
        """Decode every chunk size once (lazy CUDA/cuDNN initialisation, kernel selection),
        then put the stream back as it was; returns the seconds it took. Run it before the
        sound device opens so the first chunks of a show cost what the others do."""
        start = time.perf_counter()
        saved = self.get_state()
        self.push(torch.zeros(1, num_q, FIRST_CHUNK_FRAMES, dtype=torch.long))
        for n in sorted(set(chunk_frames)):
            self.push(torch.zeros(1, num_q, n, dtype=torch.long))
        self.set_state(saved)
        return time.perf_counter() - start

    @torch.inference_mode()
    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """``[B, Q, n]`` codes → ``[B, 1, hop·m]`` newly final audio on the CPU (m may be 0)."""
        if self.stream is None:
            return self._push(codes)
        with torch.cuda.stream(self.stream):
            return self._push(codes)

    def _push(self, codes: torch.Tensor) -> torch.Tensor:
        if not self.started:
            codes = codes if self.pending is None else torch.cat([self.pending, codes], dim=-1)
            if codes.shape[-1] < FIRST_CHUNK_FRAMES:
                self.pending = codes
                codes = codes[..., :0]
            else:
                self.pending, self.started = None, True
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 1, 0)
        x = self.quantizer.decode(codes.transpose(0, 1).to(self.device))  # [B, 128, n]
        for layer in self.layers:
            x = layer(x)
        if self.lookahead_samples:  # whole frames only; the rest waits for the next chunk
            if self.held is not None:
                x = torch.cat([self.held, x], dim=-1)
            whole = x.shape[-1] // self.hop * self.hop
            x, self.held = x[..., :whole], x[..., whole:].clone()
        return x.cpu()  # the chunk's one device→host copy (a no-op on the CPU)


def _output_lag(layers) -> int:
    """Output samples the wrapped decoder lags behind ``hop ·`` frames read: each layer's lag
    times the upsampling after it."""
    lag, scale = 0, 1
    for layer in reversed(layers):
        lag += _lag(layer) * scale
        if isinstance(layer, _ConvTransposeState):
            scale *= layer.stride
    return lag
