import torch
from fixtures import golden, needs_fixtures

from engine.model.tokens.patterns import apply_delay, start_triangle_mask, tokens_to_codes, undelay


def reference_roll_along(arr, shifts, dim):
    """encodecgpt2.roll_along, re-typed here as the independent reference."""
    dim %= arr.ndim
    shape = (1,) * dim + (-1,) + (1,) * (arr.ndim - dim - 1)
    idx = torch.arange(arr.shape[dim]).reshape(shape)
    return torch.gather(arr, dim, (idx - shifts.unsqueeze(dim)) % arr.shape[dim])


def reference_apply(codes):
    codes = torch.nn.functional.pad(codes + 1, (0, codes.shape[1] - 1))
    shifts = torch.arange(codes.shape[1])[None, :].tile((codes.shape[0], 1))
    return reference_roll_along(codes, shifts, 2)


def reference_unapply(tokens):
    shifts = -torch.arange(tokens.shape[1])[None, :].tile((tokens.shape[0], 1))
    return reference_roll_along(tokens, shifts, 2)[:, :, : -tokens.shape[1]]


def test_worked_example_from_docstring():
    codes = torch.tensor([[[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]]])
    expected = torch.tensor([[[1, 2, 3, 4, 0, 0], [0, 11, 12, 13, 14, 0], [0, 0, 21, 22, 23, 24]]])
    assert torch.equal(apply_delay(codes), expected)
    assert torch.equal(undelay(expected), codes + 1)


def test_matches_reference_on_random_codes():
    codes = torch.randint(0, 1024, (3, 8, 57), generator=torch.Generator().manual_seed(0))
    delayed = apply_delay(codes)
    assert delayed.shape == (3, 8, 57 + 7)
    assert torch.equal(delayed, reference_apply(codes))
    ours = undelay(delayed)
    assert torch.equal(ours, codes + 1)  # all T frames
    # The reference drops Q = 8 columns, one frame more than needed (documented quirk).
    assert torch.equal(reference_unapply(delayed), ours[:, :, :-1])
    assert torch.equal(tokens_to_codes(ours), codes)


@needs_fixtures
def test_delay_matches_golden():
    g = golden("encodecgpt_A.npz")
    codes = torch.from_numpy(golden("encodec_A.npz")["codes_6kbps"])
    assert torch.equal(apply_delay(codes), torch.from_numpy(g["delayed_codes"]))


def test_empty_maps_to_code_zero():
    assert tokens_to_codes(torch.tensor([0, 1, 1024])).tolist() == [0, 0, 1023]


def test_start_triangle_matches_reference_loop():
    window, q = 20, 8
    mask = torch.zeros(window, q, dtype=torch.bool)
    for k in range(q - 1):  # gen_utils.generate_interp: generation_[k, k+1:] = 0
        mask[k, k + 1 :] = True
    assert torch.equal(start_triangle_mask(window, q), mask)
