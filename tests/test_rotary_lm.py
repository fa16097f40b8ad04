"""The rotary family's decoder against x-transformers itself (the independent reference):
loading by key name across releases, logits, the recipe's sampling loop, and both rolling
windows (``fast`` = sliding cache vs a banded full forward; ``exact`` vs x-transformers on
the window at every step)."""

from pathlib import Path

import pytest
import torch

from engine.errors import UserError
from engine.live.rotary.recompute_step import RecomputeStep
from engine.live.rotary.sliding_step import SlidingStep
from engine.model.loading.xtransformers import load_rotary_state

xt = pytest.importorskip("x_transformers")

FIXTURES = sorted((Path(__file__).parent / "data" / "xtransformers").glob("xt_*.pt"))


def recipe_model(depth: int = 6, seed: int = 0) -> torch.nn.Module:
    """The tutorial's TransformerWrapper, randomly initialised, then perturbed so that norms
    and biases are not at their initial values."""
    torch.manual_seed(seed)
    model = xt.TransformerWrapper(num_tokens=1024, max_seq_len=250, attn_layers=xt.Decoder(
        dim=256, depth=depth, heads=4, rotary_pos_emb=True)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def recipe():
    model = recipe_model()
    return model, load_rotary_state(model.state_dict(), {"heads": 4}, "recipe")


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_each_release_layout_loads_to_the_same_logits(path):
    saved = torch.load(path, weights_only=True)
    ours = load_rotary_state(saved["state_dict"], {"heads": 2}, str(path))
    with torch.no_grad():
        assert (ours(saved["tokens"]) - saved["logits"]).abs().max() < 1e-5


def test_recipe_shape_logits_equal_xtransformers(recipe):
    model, ours = recipe
    tokens = torch.randint(0, 1024, (2, 250), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours(tokens) - model(tokens)).abs().max() < 1e-5


def test_absolute_position_embedding_is_refused():
    model = xt.TransformerWrapper(num_tokens=64, max_seq_len=20, attn_layers=xt.Decoder(
        dim=32, depth=1, heads=2))
    with pytest.raises(UserError, match="absolute position embedding"):
        load_rotary_state(model.state_dict(), {"heads": 2}, "abs")


@pytest.mark.slow
def test_greedy_equals_the_recipe_sampling_loop(recipe):
    model, ours = recipe
    seq = torch.zeros(1, 1, dtype=torch.long)  # the recipe's loop: start token 0, one at a time
    with torch.no_grad():
        for _ in range(240):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    step = SlidingStep(ours, window=250)
    logits, got = step.start(torch.zeros(0, dtype=torch.long)), []
    for _ in range(240):
        got.append(int(logits.argmax()))
        logits = step.push(got[-1])
    assert got == seq[0, 1:].tolist()


def banded_reference(state: dict, tokens: list[int], window: int, num_q: int,
                     heads: int) -> torch.Tensor:
    """An independent full forward with the sliding-window mask, from the raw x-transformers
    state dict (1.36+ layout): query ``t`` attends to the start token and tokens ``s(t)..t``
    (``s`` the smallest frame start leaving ``<= W - 1`` tokens), with positions counted in
    that band (start token 0). Returns logits ``[len(tokens) + 1, V]``."""
    def norm(x, key):
        return torch.nn.functional.layer_norm(x, x.shape[-1:]) * (state[key] + 1)

    def rotate(t, pos):  # t [H, n, Dh], interleaved pairs on the first 32 channels
        inv = state["attn_layers.rotary_pos_emb.inv_freq"]
        ang = (pos.float()[:, None] * inv[None]).repeat_interleave(2, -1)
        r, rest = t[..., :32], t[..., 32:]
        pair = r.unflatten(-1, (-1, 2))
        turned = torch.stack((-pair[..., 1], pair[..., 0]), -1).flatten(-2)
        return torch.cat((r * ang.cos() + turned * ang.sin(), rest), -1)

    seq = torch.tensor([0] + tokens)
    h = state["token_emb.emb.weight"][seq]  # [N, D]
    depth = len({k.split(".")[2] for k in state if k.startswith("attn_layers.layers.")}) // 2
    for i in range(depth):
        a, f = f"attn_layers.layers.{2 * i}", f"attn_layers.layers.{2 * i + 1}"
        x = norm(h, f"{a}.0.0.gamma")
        q, k, v = (x @ state[f"{a}.1.to_{n}.weight"].T for n in "qkv")
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(0, 1) for t in (q, k, v))
        out = torch.zeros_like(q)
        for j in range(len(seq)):
            t = j - 1  # token index of this query (-1: the start token)
            s = -(-max(0, t + 1 - (window - 1)) // num_q) * num_q
            keys = [0] + list(range(1 + s, j + 1))
            pos = torch.tensor([0] + list(range(1, j - s + 1)))
            qq = rotate(q[:, j:j + 1], pos[-1:])
            kk = rotate(k[:, keys], pos)
            att = (qq @ kk.transpose(-1, -2) / 8.0).softmax(-1)
            out[:, j] = (att @ v[:, keys])[:, 0]
        h = h + out.transpose(0, 1).flatten(-2) @ state[f"{a}.1.to_out.weight"].T
        x = norm(h, f"{f}.0.0.gamma")
        x = torch.nn.functional.gelu(x @ state[f"{f}.1.ff.0.0.weight"].T
                                     + state[f"{f}.1.ff.0.0.bias"])
        h = h + x @ state[f"{f}.1.ff.2.weight"].T + state[f"{f}.1.ff.2.bias"]
    return norm(h, "attn_layers.final_norm.gamma") @ state["to_logits.weight"].T


@pytest.mark.slow
def test_sliding_cache_equals_banded_full_forward(recipe):
    model, ours = recipe
    step = SlidingStep(ours, window=250)
    logits, tokens, got = step.start(torch.zeros(0, dtype=torch.long)), [], []
    for _ in range(300):
        got.append(logits)
        tokens.append(int(logits.argmax()))
        logits = step.push(tokens[-1])
    with torch.no_grad():
        ref = banded_reference(model.state_dict(), tokens[:-1], 250, 2, 4)  # [300, V]
    assert tokens == ref.argmax(-1).tolist()
    assert (torch.stack(got) - ref).abs().max() < 1e-4


def last_window(tokens: list[int], keep: int, num_q: int) -> list[int]:
    """The last ``keep`` tokens, then forward to the first codebook-0 token."""
    first = max(0, len(tokens) - keep)
    while first % num_q:
        first += 1
    return tokens[first:]


@pytest.mark.slow
def test_exact_mode_equals_xtransformers_on_the_window_every_step(recipe):
    model, ours = recipe
    step = RecomputeStep(ours, window=250)
    logits, tokens = step.start(torch.zeros(0, dtype=torch.long)), []
    for _ in range(300):
        seq = torch.tensor([[0] + last_window(tokens, 249, 2)])
        with torch.no_grad():
            ref = model(seq)[0, -1]
        assert (logits - ref).abs().max() < 1e-5
        tokens.append(int(ref.argmax()))
        assert int(logits.argmax()) == tokens[-1]
        logits = step.push(tokens[-1])


def test_fast_equals_exact_at_depth_one():
    """One layer: nothing is carried from tokens outside the window, so the modes agree."""
    ours = load_rotary_state(recipe_model(depth=1).state_dict(), {"heads": 4}, "depth1")
    fast, exact = SlidingStep(ours, window=12), RecomputeStep(ours, window=12)
    prefix = torch.randint(0, 1024, (30,), generator=torch.Generator().manual_seed(2))
    a, b = fast.start(prefix), exact.start(prefix)
    for token in torch.randint(0, 1024, (40,), generator=torch.Generator().manual_seed(3)):
        assert (a - b).abs().max() < 1e-4
        a, b = fast.push(int(token)), exact.push(int(token))


def test_fast_rebase_and_long_prefix_change_nothing():
    """Rotating the cache back every 10 tokens, after a prefix longer than the window,
    gives the same logits as never re-basing (positions only matter relatively)."""
    ours = load_rotary_state(recipe_model(depth=2).state_dict(), {"heads": 4}, "depth2")
    prefix = torch.randint(0, 1024, (31,), generator=torch.Generator().manual_seed(4))
    plain, rebased = SlidingStep(ours, window=12), SlidingStep(ours, window=12, rebase_every=10)
    a, b = plain.start(prefix), rebased.start(prefix)
    for token in torch.randint(0, 1024, (60,), generator=torch.Generator().manual_seed(5)):
        assert (a - b).abs().max() < 1e-4
        a, b = plain.push(int(token)), rebased.push(int(token))
    assert rebased.next_pos < 12 + 10 and plain.next_pos > 60
