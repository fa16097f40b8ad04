"""``run_engine.py train`` on CPU: the loss falls, resume is exact, DDP runs, checkpoints play.

Uses the session's tone cache (conftest ``tone_cache``) and the tiny preset.
"""

import numpy as np
import pytest
import torch
from fixtures import golden, needs_fixtures
from live_helpers import run_cli

from engine.train.data.dataset import IGNORE, StepBatches, collate
from engine.train.report import loss_curves, smooth_losses
from engine.train.task import lm_loss

pytestmark = needs_fixtures

RECIPE = ("--preset", "tiny", "--batch-size", "4", "--clip-seconds", "1", "--lr", "1e-3",
          "--warmup-steps", "10", "--val-every", "50", "--log-every", "1", "--workers", "0",
          "--val-fraction", "0.1")


@pytest.fixture(scope="session")
def trained_run(tone_cache, tmp_path_factory):
    root, _ = tone_cache
    run = tmp_path_factory.mktemp("train") / "run"
    proc = run_cli("train", root / "cache", "--out", run, *RECIPE, "--max-steps", "200",
                   "--ckpt-every", "100", timeout=900)
    return root / "cache", run, proc


def _mean(curve: dict[int, float], steps) -> float:
    return float(np.mean([curve[s] for s in steps]))


@pytest.mark.slow
def test_training_loss_falls_and_validation_improves(trained_run):
    _, run, proc = trained_run
    curves = loss_curves(run)
    train, val = curves["train_loss"], curves["val_loss"]
    assert sorted(train) == list(range(200))
    start, end = _mean(train, range(5)), _mean(train, range(190, 200))
    assert start > 6.0  # ~ln(1025) for an untrained model
    assert end < 0.6 * start, (start, end)
    assert sorted(val) == [49, 99, 149, 199] and val[199] < val[49] - 0.3, val
    assert (run / "loss.png").stat().st_size > 10_000
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["last.ckpt", "step0000100.ckpt", "step0000200.ckpt"]
    assert "done at step 200" in proc.stdout


@pytest.mark.slow  # reads the 200-step run the slow tests share
def test_training_prints_one_plain_line_per_interval_and_no_lightning_chatter(trained_run):
    _, _, proc = trained_run
    out = proc.stdout + proc.stderr
    for noise in ("Epoch 0/", "Tip:", "litmodels", "GPU available", "| Name", "it/s]"):
        assert noise not in out, noise
    steps = [line for line in proc.stdout.splitlines() if " loss " in line]
    assert len(steps) == 200 and steps[-1].startswith("step 200/200  loss ")
    assert "steps/s" in steps[-1] and "eta 0:00:00" in steps[-1]
    vals = [line for line in proc.stdout.splitlines() if "val_loss" in line]
    assert len(vals) == 4 and vals[-1].startswith("step 200/200  val_loss ")


def test_the_smoothed_loss_follows_sparse_logs_and_smooths_dense_ones():
    sparse = list(range(0, 301, 50))  # the case: at step 300 it showed 3.7, not 2.5
    assert smooth_losses(sparse, [5 - 2.5 * s / 300 for s in sparse])[-1] == pytest.approx(
        2.5, abs=0.05)
    rng = np.random.RandomState(0)
    dense = list(range(3000))
    noisy = [3 + 0.5 * rng.randn() for _ in dense]
    smoothed = smooth_losses(dense, noisy)
    assert np.std(smoothed[300:]) < 0.2 * np.std(noisy)


@pytest.mark.slow
def test_resume_from_a_mid_run_checkpoint_continues_the_same_curve(trained_run, tmp_path):
    cache, run, _ = trained_run
    proc = run_cli("train", cache, "--out", tmp_path / "resumed", "--resume",
                   run / "checkpoints" / "step0000100.ckpt", "--max-steps", "120", timeout=600)
    first, resumed = loss_curves(run)["train_loss"], loss_curves(tmp_path / "resumed")
    assert sorted(resumed["train_loss"]) == list(range(100, 120))
    for step, loss in resumed["train_loss"].items():
        assert loss == pytest.approx(first[step], abs=1e-5), step
    assert "done at step 120" in proc.stdout


@pytest.mark.slow
def test_final_checkpoint_loads_renders_and_exports(trained_run, tmp_path):
    from engine.model.loading.checkpoint import from_pretrained, load_checkpoint

    cache, run, proc = trained_run
    last = run / "checkpoints" / "last.ckpt"
    # the hint plays it with the EnCodecMAE the cache was embedded with (not the hub's base)
    assert f"--checkpoint {last} --encodecmae " in proc.stdout + proc.stderr
    with np.load(cache / "shards" / "shard-00000.npz") as z:
        np.save(tmp_path / "p.npy", z["prompts"][0])
    run_cli("render", "--checkpoint", last, "--prompt", tmp_path / "p.npy", "--seconds", "1",
            "--seed", "3", "--tokens-out", tmp_path / "t.npy", "--out", tmp_path / "o.wav")
    assert np.load(tmp_path / "t.npy").shape == (75, 8)
    loaded = load_checkpoint(last)  # weights-only load: no --trust-checkpoint needed
    state = torch.load(last, weights_only=True)["state_dict"]
    assert torch.equal(loaded.model.classification_head.weight, state["classification_head.weight"])
    assert loaded.model.gpt.config.n_layer == 6 and loaded.model.prompt_dim == 64
    run_cli("export", last, "--out", tmp_path / "export")
    again = from_pretrained(tmp_path / "export")
    prompt, tokens = torch.randn(1, 64), torch.randint(0, 1025, (1, 8, 20))
    with torch.no_grad():
        torch.testing.assert_close(again.model.training_logits(prompt, tokens),
                                   loaded.model.training_logits(prompt, tokens))


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tone_cache, tmp_path):
    root, _ = tone_cache
    proc = run_cli("train", root / "cache", "--out", tmp_path / "ddp", *RECIPE,
                   "--clip-seconds", "0.5", "--max-steps", "4", "--ckpt-every", "2",
                   "--val-every", "2", "--devices", "2", "--accelerator", "cpu", timeout=600)
    meta = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt",
                      weights_only=True)["encodecgpt_live"]
    assert meta["world_size"] == 2 and meta["step"] == 4
    train = loss_curves(tmp_path / "ddp")["train_loss"]
    assert sorted(train) == [0, 1, 2, 3] and all(np.isfinite(list(train.values())))
    assert proc.stdout.count("done at step 4") == 1  # rank 0 reports, once


def test_ranks_draw_disjoint_samples_and_restart_where_they_left_off():
    class Clips:  # 10 clips of 100 frames
        def length(self, i):
            return 100

    ids = np.arange(10)
    ranks = [StepBatches(Clips(), ids, 75, 2, seed=1, rank=r, world=2) for r in (0, 1)]
    seen = [c for m in range(2) for r in ranks for c, _ in r.batch(m)]
    assert sorted(seen[:8]) == sorted(set(seen[:8]))  # one epoch-permutation, no repeats
    resumed = StepBatches(Clips(), ids, 75, 2, seed=1, rank=1, world=2, start_fn=lambda: 3)
    assert next(iter(resumed)) == ranks[1].batch(3)


def test_loss_matches_the_reference_and_masking_drops_empty_positions(loaded):
    """The original's loss for the golden pair is 7.0973 (fixture README)."""
    g = golden("encodecgpt_A.npz")
    codes = torch.from_numpy(g["delayed_codes"])  # [1, 8, 307] delayed
    prompt = torch.from_numpy(g["prompt_p0"])[None]
    batch = {"prompts": prompt, "tokens": codes, "targets": codes.clone()}
    with torch.no_grad():
        assert lm_loss(loaded.model, batch, mask_empty=False).item() == pytest.approx(7.0973,
                                                                                     abs=1e-3)
        masked = lm_loss(loaded.model, batch, mask_empty=True).item()
        logits = loaded.model.training_logits(prompt, codes)[0, :-1]  # [L, Q, V]
    logp = torch.log_softmax(logits, -1)
    picked = [-logp[t, k, codes[0, k, t]].item() for t in range(codes.shape[2])
              for k in range(8) if codes[0, k, t] != 0]  # a slow loop over real positions
    assert masked == pytest.approx(float(np.mean(picked)), abs=1e-4)


def test_collate_pads_and_ignores_the_padding():
    short, long = torch.randint(0, 1024, (8, 5)), torch.randint(0, 1024, (8, 9))
    batch = collate([(short, torch.zeros(4)), (long, torch.ones(4))])
    assert batch["tokens"].shape == (2, 8, 16)
    assert (batch["targets"][0, :, 12:] == IGNORE).all() and (batch["tokens"][0, :, 12:] == 0).all()
    assert (batch["targets"][1] != IGNORE).all()
    assert batch["tokens"][0, 3, 3] == short[3, 0] + 1  # codebook 3 delayed by 3


@pytest.mark.slow
def test_train_errors_are_one_line(tone_cache, tmp_path):
    proc = run_cli("train", tmp_path, "--out", tmp_path / "run", "--preset", "tiny", ok=False)
    assert proc.returncode == 2 and "not a token cache" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("train", tone_cache[0] / "cache", "--out", tmp_path / "run", "--resume",
                   "last", ok=False)
    assert proc.returncode == 2 and "no such checkpoint" in proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_training_on_gpu(tone_cache, tmp_path):
    root, _ = tone_cache
    run_cli("train", root / "cache", "--out", tmp_path / "gpu", *RECIPE, "--max-steps", "30",
            "--ckpt-every", "30", "--accelerator", "gpu", timeout=600)
    train = loss_curves(tmp_path / "gpu")["train_loss"]
    assert _mean(train, range(25, 30)) < _mean(train, range(5))
    meta = torch.load(tmp_path / "gpu" / "checkpoints" / "last.ckpt",
                      weights_only=True)["encodecgpt_live"]
    assert meta["options"]["precision"] == "auto" and meta["step"] == 30


def test_init_from_a_gpt2_folder_copies_its_body(tmp_path):
    """``--init`` takes the GPT2 body as the original did (``GPT2Model.from_pretrained``)."""
    from transformers import GPT2Config, GPT2Model

    from engine.errors import UserError
    from engine.train.options import TrainOptions
    from engine.train.task import build_model

    torch.manual_seed(0)
    body = GPT2Model(GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=400))
    body.save_pretrained(tmp_path / "gpt2-small-test")
    model = build_model(TrainOptions(init=str(tmp_path / "gpt2-small-test")), prompt_dim=64)
    assert model.prompt_proj is None  # prompt size = width: no projection, as the original
    for name, value in body.state_dict().items():
        assert torch.equal(model.gpt.state_dict()[name], value), name
    with pytest.raises(UserError, match="cannot load GPT2 weights"):
        build_model(TrainOptions(init=str(tmp_path / "missing")), prompt_dim=64)
