"""LeanGPT (the live step) against the reference transformers forward."""

import pytest
import torch
from conftest import tiny_random_model

from engine.live.step.kv_step import LeanGPT, RowGroup


@pytest.fixture(scope="module")
def model():
    return tiny_random_model(n_layer=3)


def _reference(model, prompt, tokens):
    with torch.inference_mode():
        return model(prompt[None], tokens[None])[0][0]  # [1 + L, Q, V]


def test_row_groups_equal_the_reference_forward(model):
    torch.manual_seed(1)
    p0, p1 = torch.randn(128), torch.randn(128)
    toks = torch.randint(0, 1025, (20, 8))
    lean = LeanGPT(model)
    main, other = lean.new_cache(32), lean.new_cache(32)
    lean.forward([RowGroup(main, 0, torch.cat([lean.embed_prompt(p0),
                                               lean.embed_tokens(toks[:12])]))], [])
    # One forward: rewrite main's prompt, continue main by one row, prefill another cache.
    out = lean.forward([RowGroup(main, 0, lean.embed_prompt(p1)),
                        RowGroup(main, 13, lean.embed_tokens(toks[12:13])),
                        RowGroup(other, 0, torch.cat([lean.embed_prompt(p1),
                                                      lean.embed_tokens(toks[:5])]))],
                       out_rows=[1, 7])
    ref_other = _reference(model, p1, toks[:5])
    assert (out[1] - ref_other[5]).abs().max() < 1e-5
    # main row 13 attends to the NEW prompt at position 0 and rows computed under p0:
    with torch.inference_mode():
        _, cache = model(p0[None], toks[None, :12], use_cache=True)
        _, fresh = model(p1[None], None, use_cache=True)
        for layer, new in zip(cache.layers, fresh.layers, strict=True):
            layer.keys[:, :, :1], layer.values[:, :, :1] = new.keys, new.values
        expect, _ = model(None, toks[None, 12:13], past_key_values=cache)
    assert (out[0] - expect[0, 0]).abs().max() < 1e-5


@pytest.mark.parametrize("quantize,tol", [("int8", 0.15), ("bf16", 0.15)])
def test_quantized_steps_stay_close_to_fp32(model, quantize, tol):
    torch.manual_seed(2)
    p = torch.randn(128)
    toks = torch.randint(0, 1025, (16, 8))
    ref = _reference(model, p, toks)
    lean = LeanGPT(model, quantize)
    cache = lean.new_cache(20)
    out = lean.forward([RowGroup(cache, 0, torch.cat([lean.embed_prompt(p),
                                                      lean.embed_tokens(toks)]))],
                       list(range(17)))
    err = (out - ref).abs().max() / ref.abs().max()
    assert err < tol, f"{quantize}: relative error {err:.3f}"
    # The argmax may flip only where the fp32 top-2 margin is within the quantization noise
    # (per-logit RMS error s; the difference of two logits' errors has std ~1.4 s). Where the
    # margin exceeds 6 s (> 4 std) the quantized step must pick the same token, and that
    # must be most positions (int8 ~70 %, bf16 ~93 % here), so the check is not vacuous.
    rms = (out - ref).pow(2).mean().sqrt()
    top2 = ref.topk(2, dim=-1).values
    clear = top2[..., 0] - top2[..., 1] > 6 * rms
    assert (out.argmax(-1) == ref.argmax(-1))[clear].all() and clear.float().mean() > 0.5
