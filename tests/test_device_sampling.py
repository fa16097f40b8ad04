"""The device sampler against the CPU sampler (engine.model.sampling): the same argmax, the
same top-k / top-p masks op for op (ties included), and draws that follow the same
distribution (chi-square against the exact probabilities and against torch.multinomial)."""

import pytest
import torch
from device_helpers import DEVICES, gpu

from engine.model.device_sampling import (
    DeviceSampling,
    draw_noise,
    filtered_scores,
    sample_on_device,
)
from engine.model.sampling import filter_top_k, filter_top_p, sample_frame

V = 1025
# Draws are seeded, so each p-value below is a fixed number; a correct sampler clears this
# threshold, a biased one (see the power check) falls far below it.
P_THRESHOLD = 1e-3
DRAWS = 24_000


def _settings(device, temperature=1.0, top_k=0, top_p=1.0, greedy=False) -> DeviceSampling:
    s = DeviceSampling.on(device)
    s.set(temperature, top_k, top_p, greedy)
    return s


def _tied_logits(g: torch.Generator, rows: int, ties: bool) -> torch.Tensor:
    """Logits on a coarse grid (many exact ties) or continuous ones."""
    coarse = torch.randint(0, 8, (rows, V), generator=g).float() * 0.7
    return coarse if ties else coarse + 3 * torch.randn(rows, V, generator=g)


@pytest.mark.parametrize("device", DEVICES)
def test_greedy_takes_the_first_maximal_logit(device):
    g = torch.Generator().manual_seed(0)
    logits = _tied_logits(g, 64, ties=True).view(8, 8, V)  # ties at the maximum
    noise = draw_noise(torch.empty(8, 8, V, device=device), None)
    want = sample_frame(logits, greedy=True)
    for settings in (_settings(device, temperature=0.0), _settings(device, greedy=True)):
        got = sample_on_device(logits.to(device), settings, noise)
        assert torch.equal(got.cpu(), want) and torch.equal(want, logits.argmax(-1))


def test_masks_equal_the_cpu_sampler_op_for_op():
    """600 rows of [8, 1025] logits, half with exact ties, with k across 0..V+ (and k = 1,
    k = V) and p across (0, 1]: the filtered scores are bit-identical to the CPU's."""
    g = torch.Generator().manual_seed(1)
    ks = [0, 1, 2, 7, 50, 400, V - 1, V, V + 10]
    ps = [0.05, 0.3, 0.5, 0.9, 0.95, 0.999, 1.0]
    temps = [0.05, 0.7, 1.0, 1.3]
    for i in range(600):
        logits = _tied_logits(g, 8, ties=i % 2 == 0)
        k, p, t = ks[i % len(ks)], ps[i % len(ps)], temps[i % len(temps)]
        got = filtered_scores(logits, _settings("cpu", t, k, p))
        want = filter_top_p(filter_top_k(logits.float() / t, k), p)
        assert torch.equal(got, want), (i, k, p, t)


def _chi_square_p(observed: torch.Tensor, expected: torch.Tensor, dof: int) -> float:
    stat = ((observed - expected) ** 2 / expected).sum()
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0), stat / 2.0))


def _race_counts(logits: torch.Tensor, settings: DeviceSampling, seed: int,
                 biased: bool = False) -> torch.Tensor:
    """How often each token wins the race over ``DRAWS`` draws (in batches)."""
    device = settings.temperature.device
    gen = torch.Generator(device).manual_seed(seed)
    counts = torch.zeros(V, dtype=torch.long)
    batch = 2_000
    rows = logits.to(device).expand(batch, V)
    noise = torch.empty(batch, V, device=device)
    for _ in range(DRAWS // batch):
        draw_noise(noise, gen)
        if biased:  # the wrong race (multiplying by the noise), to show the test's power
            probs = filtered_scores(rows, settings).softmax(-1)
            tokens = (probs * noise).argmax(-1)
        else:
            tokens = sample_on_device(rows, settings, noise)
        counts += torch.bincount(tokens.cpu(), minlength=V)
    return counts


def _goodness_of_fit(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square p-value of ``counts`` against ``probs``; cells expected < 5 are pooled."""
    expected = probs.double() * counts.sum()
    big = expected >= 5
    obs = torch.cat([counts[big].double(), counts[~big].double().sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    return _chi_square_p(obs[keep], exp[keep], int(keep.sum()) - 1)


@pytest.mark.parametrize("device", DEVICES)
def test_race_draws_follow_the_filtered_distribution(device):
    """24 000 draws at temperature 0.8, top-k 40, top-p 0.9: only kept tokens are drawn, the
    counts fit the CPU sampler's probabilities (chi-square p > 1e-3), and a biased race on
    the same noise is rejected (p < 1e-6), so the test can tell."""
    g = torch.Generator().manual_seed(2)
    logits = 2.0 * torch.randn(1, V, generator=g)
    settings = _settings(device, 0.8, 40, 0.9)
    probs = filter_top_p(filter_top_k(logits / 0.8, 40), 0.9).softmax(-1)[0]
    counts = _race_counts(logits, settings, seed=3)
    assert counts[probs == 0].sum() == 0
    assert _goodness_of_fit(counts, probs) > P_THRESHOLD
    assert _goodness_of_fit(_race_counts(logits, settings, 3, biased=True), probs) < 1e-6


def test_race_and_multinomial_draw_alike():
    """Two-sample chi-square: the race's counts and torch.multinomial's (the CPU sampler,
    same settings) come from one distribution (p > 1e-3)."""
    g = torch.Generator().manual_seed(4)
    logits = 1.5 * torch.randn(1, V, generator=g)
    race = _race_counts(logits, _settings("cpu", 1.1, 0, 0.95), seed=5)
    gen = torch.Generator().manual_seed(6)
    multi = torch.bincount(sample_frame(logits.expand(DRAWS, V)[:, None], temperature=1.1,
                                        top_p=0.95, generator=gen)[:, 0], minlength=V)
    table = torch.stack([race, multi]).double()  # [2, V]
    used = table.sum(0) >= 10
    pooled = torch.cat([table[:, used], table[:, ~used].sum(1, keepdim=True)], dim=1)
    pooled = pooled[:, pooled.sum(0) > 0]
    expected = pooled.sum(1, keepdim=True) * pooled.sum(0, keepdim=True) / pooled.sum()
    assert _chi_square_p(pooled, expected, pooled.shape[1] - 1) > P_THRESHOLD


@gpu
def test_cuda_masks_equal_the_cpu_sampler_off_the_boundary():
    """On CUDA, softmax/cumsum round differently: rows with a token whose mass before it is
    within 1e-5 of p (or tied scores) may legitimately differ; every other row must match."""
    g = torch.Generator().manual_seed(7)
    compared = 0
    for i in range(200):
        logits = _tied_logits(g, 8, ties=False)
        k, p, t = [0, 5, 100][i % 3], [0.5, 0.9, 0.97][i % 3], [0.7, 1.0][i % 2]
        got = filtered_scores(logits.cuda(), _settings("cuda", t, k, p)).cpu()
        want = filter_top_p(filter_top_k(logits / t, k), p)
        sorted_scores = torch.sort(filter_top_k(logits / t, k), -1, descending=True).values
        probs = sorted_scores.softmax(-1)
        near = ((probs.cumsum(-1) - probs - p).abs() < 1e-5).any(-1)
        same = (torch.isinf(got) == torch.isinf(want)).all(-1)
        assert same[~near].all(), i
        compared += int((~near).sum())
    assert compared > 0.9 * 200 * 8

