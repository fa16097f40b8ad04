"""The onnxruntime live step (``--quantize int4``): its weight layout, its graph against the
torch step (exact in fp32), and the rolling generator running on it."""

import numpy as np
import pytest
import torch
from conftest import tiny_random_model
from fixtures import golden, run_cli

from engine.live.controls import ControlEvent, ControlState
from engine.live.generator import RollingGenerator
from engine.live.step.block_quant import block_size_for, quantize
from engine.live.step.kv_step import LeanGPT, RowGroup
from engine.live.step.weight_formats import onnxruntime_version

needs_ort = pytest.mark.skipif(
    onnxruntime_version() is None,
    reason="onnxruntime/onnx not installed (the cpu extra: pip install -e '.[cpu]')")


@pytest.mark.parametrize("bits,symmetric", [(4, False), (4, True), (8, True)])
def test_block_quantization_round_trips(bits, symmetric):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((96, 40)).astype(np.float32)
    w[:32, 0] = 0.0  # a zero block stays zero (asymmetric: 0 is on the grid)
    q = quantize(w, bits, block=32, symmetric=symmetric)
    assert q.packed.shape == (40, 3, 32 * bits // 8) and q.scales.shape == (40, 3)
    assert (q.zero_points is None) == symmetric
    deq = q.dequantize()
    step = np.repeat(q.scales.T, 32, axis=0)  # [K, N] the scale of each weight's block
    assert np.all(np.abs(deq - w) <= 0.5 * step + 1e-6)
    assert np.all(deq[:32, 0] == 0.0)
    assert block_size_for(64, 128) == 64 and block_size_for(3072, 32) == 32


@pytest.fixture(scope="module")
def model():
    return tiny_random_model(n_layer=3)


def _steps(model, quantize):
    if quantize in ("none", "int8", "bf16"):
        return LeanGPT(model, quantize)
    from engine.live.step.ort_step import OrtKVStep

    return OrtKVStep(model, quantize)


def _group_script(step):
    """Every plan the ORT step has: a prefill, [prompt at 0 + a row] on one cache, three
    groups over two caches (one run per group), and a plain one-row step."""
    torch.manual_seed(1)
    p0, p1 = torch.randn(128), torch.randn(128)
    toks = torch.randint(0, 1025, (20, 8))
    main, other = step.new_cache(32), step.new_cache(32)
    step.forward([RowGroup(main, 0, torch.cat([step.embed_prompt(p0),
                                               step.embed_tokens(toks[:12])]))], [])
    outs = [step.forward([RowGroup(main, 0, step.embed_prompt(p1)),
                          RowGroup(main, 12, step.embed_tokens(toks[12:14]))], [0, 1, 2])]
    outs.append(step.forward([RowGroup(main, 14, step.embed_tokens(toks[14:15])),
                              RowGroup(other, 0, torch.cat([step.embed_prompt(p0),
                                                            step.embed_tokens(toks[:5])])),
                              RowGroup(main, 0, step.embed_prompt(p0))], [0, 3, 6]))
    outs.append(step.forward([RowGroup(main, 15, step.embed_tokens(toks[15:16]))], [0]))
    return outs, (main, other)


@needs_ort
def test_ort_graph_in_fp32_equals_the_torch_step(model):
    """Same arithmetic, another engine: attention, in-place cache writes, the prompt-row
    graph and the per-group fallback all agree with LeanGPT to float rounding."""
    ref, ref_caches = _group_script(_steps(model, "none"))
    out, caches = _group_script(_steps(model, "ort-fp32"))
    for a, b in zip(ref, out, strict=True):
        assert a.shape == b.shape and (a - b).abs().max() < 1e-4
    for a, b in zip(ref_caches, caches, strict=True):
        assert a.length == b.length
        assert (a.k - b.k).abs().max() < 1e-5 and (a.v - b.v).abs().max() < 1e-5


@needs_ort
def test_int4_layout_matches_the_dequantized_weights(model):
    """A wrong nibble order or scale layout would be O(1) off; int8 activations (accuracy
    level 4) leave ~1 % relative error."""
    from engine.live.step.ort_graph import LinearFormat, StepWeights, head_graph
    from engine.live.step.ort_step import _session

    cfg = model.gpt.config
    w = StepWeights.from_state_dict(model.state_dict(), cfg.n_layer, cfg.n_head,
                                    cfg.layer_norm_epsilon)
    h = np.random.default_rng(0).standard_normal((3, w.d)).astype(np.float32)
    for fmt in (LinearFormat(4, 32), LinearFormat(4, 32, symmetric=True), LinearFormat(8, 32),
                LinearFormat(4, 128)):
        graph, nbytes = head_graph(w, fmt)
        out = _session(graph, 1).run(["logits"], {"h": h})[0]
        q = quantize(w.head[0], fmt.bits, fmt.block, fmt.symmetric)
        ref = h @ q.dequantize() + w.head[1]
        assert nbytes == q.nbytes  # what one row streams (bias aside)
        assert np.abs(out - ref).max() < 0.02 * np.abs(ref).max(), fmt


@needs_ort
def test_groups_of_one_cache_must_not_overlap(model):
    step = _steps(model, "ort-fp32")
    cache = step.new_cache(16)
    x = step.embed_tokens(torch.zeros(4, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="overlap"):
        step.forward([RowGroup(cache, 0, x), RowGroup(cache, 2, x[:1]),
                      RowGroup(step.new_cache(8), 0, x[:1])], [])


def _controls(*prompts, **kw) -> ControlState:
    c = ControlState(**kw)
    for i, p in enumerate(prompts):
        c.apply(ControlEvent("/prompt/slot", (i, np.asarray(p, dtype=np.float32))))
    return c


@needs_ort
def test_int4_generator_background_prefill_equals_inline():
    """The rolling generator runs on the ORT step unchanged: a moving prompt (the prompt-row
    graph), re-prefill jobs on the worker thread (another cache, several rows), switches;
    the tokens do not depend on the worker's timing."""
    model = tiny_random_model()
    rng = np.random.RandomState(0)
    prompts = rng.randn(128).astype(np.float32), rng.randn(128).astype(np.float32)
    runs = []
    for background in (True, False):
        gen = RollingGenerator(model, _controls(*prompts, glide=0.05), window=16, mode="fast",
                               hop=4, quantize="int4", seed=3,
                               background=background)
        assert gen.weight_format == "int4"
        for f in (5, 30, 47):
            gen.schedule(f, [ControlEvent("/morph", (float(f % 2),))])
        try:
            runs.append(torch.stack([gen.step() for _ in range(60)]))
        finally:
            gen.close()
    assert torch.equal(runs[0], runs[1])


@needs_ort
def test_int4_save_restore_gives_identical_tokens():
    """The generator's state (caches, shadow, RNG) restores into a fresh int4 generator:
    the ORT step binds the restored caches anew and continues token for token."""
    model = tiny_random_model()
    rng = np.random.RandomState(1)
    prompts = rng.randn(128).astype(np.float32), rng.randn(128).astype(np.float32)

    def fresh():
        return RollingGenerator(model, _controls(*prompts, glide=0.1), window=16, mode="fast",
                                hop=4, quantize="int4", seed=11)

    gen = fresh()
    gen.apply_now([ControlEvent("/morph", (0.8,))])
    for _ in range(37):  # mid-glide, mid-hop, a shadow being filled
        gen.step()
    state = gen.get_state()
    runs = []
    for g in (gen, fresh()):
        if g is not gen:
            g.set_state(state)
        g.schedule(45, [ControlEvent("/morph", (0.1,))])
        try:
            runs.append(torch.stack([g.step() for _ in range(30)]))
        finally:
            g.close()
    assert torch.equal(runs[0], runs[1])


@pytest.mark.slow  # a subprocess that loads the model and codec: ~10-25 s
@needs_ort
def test_render_fast_int4_end_to_end(tmp_path, ckpt_path):
    g = golden("encodecgpt_A.npz")
    np.save(tmp_path / "p0.npy", g["prompt_p0"])
    np.save(tmp_path / "p1.npy", g["prompt_p1"])
    proc = run_cli("render", "--checkpoint", ckpt_path, "--prompt", tmp_path / "p0.npy",
                   "--prompt-to", tmp_path / "p1.npy", "--window", 20, "--mode", "fast",
                   "--quantize", "int4", "--frames", 60, "--seed", 1,
                   "--tokens-out", tmp_path / "tok.npy", "--out", tmp_path / "out.wav")
    assert "cpu, int4 (onnxruntime" in proc.stderr  # the startup line says which weights
    assert "fast window 20 hop 5, cpu, int4 (onnxruntime" in proc.stderr
    tokens = np.load(tmp_path / "tok.npy")
    assert tokens.shape == (60, 8) and tokens.min() >= 0 and tokens.max() <= 1024
    assert (tmp_path / "out.wav").stat().st_size > 0


@needs_ort
def test_a_profiled_step_names_its_kernels_and_keeps_its_logits(model, tmp_path):
    """``bench/op_profile.py``'s accounting: the profiler changes no result, and the kernel
    time of the measured runs is attributed to the graph's op types."""
    from bench.op_profile import kernel_ms
    from engine.live.step.ort_step import OrtKVStep

    plain = OrtKVStep(model, "int4")
    profiled = OrtKVStep(model, "int4", profile_prefix=str(tmp_path / "step"))
    for a, b in zip(_group_script(plain)[0], _group_script(profiled)[0], strict=True):
        assert torch.equal(a, b)
    files = profiled.end_profiling()
    assert set(files) == {"rows", "prompt_rows", "head"}
    ops = kernel_ms(files, runs=1)  # the last run of each graph
    assert {"MatMulNBits", "GroupQueryAttention", "SkipLayerNormalization", "FastGelu"} <= set(ops)
    assert all(ms > 0 for ms in ops.values())


@needs_ort
def test_logits_of_a_row_that_does_not_exist_are_refused(model):
    from engine.live.step.ort_step import OrtKVStep

    step = OrtKVStep(model, "int4")
    cache = step.new_cache(8)
    x = step.embed_tokens(torch.randint(0, 1025, (2, 8)))
    with pytest.raises(IndexError, match="2 rows"):
        step.forward([RowGroup(cache, 1, x)], [2])
