"""The rotary recipe offline: ``prepare --codebooks 2`` and ``train --arch rotary --pattern
flatten`` produce a model that ``--model`` loads (and x-transformers itself), and it renders.

The independent references: x-transformers' own ``TransformerWrapper`` (logits of the written
state dict), and the flattening written out by hand.
"""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from fixtures import TONE_CODEC, needs_fixtures
from live_helpers import run_cli
from tone_dataset import make_tone_dataset

from engine.model.loading.family import load_family
from engine.model.loading.xtransformers import (
    config_json,
    load_rotary_state,
    to_xtransformers_state,
)
from engine.model.rotary_lm import RotaryLM, RotaryLMConfig
from engine.train.data.dataset import IGNORE, collate_flat
from engine.train.report import loss_curves

TINY = RotaryLMConfig(dim=64, depth=2, heads=2, max_seq_len=64, codebooks=2)


def _trained_like(cfg: RotaryLMConfig, seed: int = 0) -> RotaryLM:
    """A random model whose norms and biases moved off their initial values (as training does)."""
    torch.manual_seed(seed)
    model = RotaryLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_collate_flat_puts_the_start_token_first_and_flattens_frame_by_frame():
    a = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])  # [Q=3, T=3]: only 2 codebooks kept
    b = torch.tensor([[10], [11], [12]])
    batch = collate_flat([(a, torch.zeros(0)), (b, torch.zeros(0))], num_q=2, start_token=0)
    assert batch["tokens"].tolist() == [[0, 1, 4, 2, 5, 3, 6], [0, 10, 11, 0, 0, 0, 0]]
    assert batch["targets"].tolist() == [[0, 1, 4, 2, 5, 3, 6],
                                         [0, 10, 11] + [IGNORE] * 4]


def test_the_written_state_dict_loads_back_and_into_x_transformers():
    xt = pytest.importorskip("x_transformers")
    ours = _trained_like(TINY)
    state = to_xtransformers_state(ours)
    again = load_rotary_state(state, config_json(TINY), "written")
    reference = xt.TransformerWrapper(num_tokens=1024, max_seq_len=64, attn_layers=xt.Decoder(
        dim=64, depth=2, heads=2, rotary_pos_emb=True)).eval()
    reference.load_state_dict(state, strict=True)
    tokens = torch.randint(0, 1024, (2, 40))
    with torch.no_grad():
        expected = ours(tokens)
        assert (again(tokens) - expected).abs().max() < 1e-5
        assert (reference(tokens) - expected).abs().max() < 1e-5


def test_rotary_training_options_are_checked_in_one_line(tmp_path):
    (tmp_path / "cache").mkdir()
    for args, words in ((("--pattern", "delay"), "trains on the flatten pattern"),
                        (("--preset", "tiny"), "--preset is EnCodecGPT's")):
        proc = run_cli("train", tmp_path / "cache", "--out", tmp_path / "run", "--arch",
                       "rotary", *args, ok=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert words in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def rotary_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rotary-train")
    make_tone_dataset(root / "src", 60, seconds=(1.0, 1.5))
    prep = run_cli("prepare", root / "src", "--out", root / "cache", "--codec", TONE_CODEC,
                   "--encodecmae", "none", "--codebooks", "2", "--workers", "1", timeout=600)
    run = root / "run"
    proc = run_cli("train", root / "cache", "--out", run, "--arch", "rotary", "--pattern",
                   "flatten", "--dim", "64", "--depth", "2", "--heads", "2", "--max-seq-len",
                   "64", "--batch-size", "16", "--lr", "1e-3", "--max-steps", "300",
                   "--val-every", "100", "--log-every", "1", "--workers", "0",
                   "--val-fraction", "0.1", timeout=900)
    return root, run, prep, proc


@needs_fixtures
@pytest.mark.slow
def test_prepare_keeps_two_codebooks_and_no_prompts(rotary_run):
    root, _, prep, _ = rotary_run
    index = json.loads((root / "cache" / "index.json").read_text())
    assert index["plan"]["num_q"] == 2 and index["plan"]["encodecmae"]["dim"] == 0
    with np.load(root / "cache" / "shards" / "shard-00000.npz") as z:
        assert z["codes"].shape[1] == 2 and z["prompts"].shape[1] == 0


@needs_fixtures
@pytest.mark.slow
def test_rotary_training_loss_falls_and_the_model_renders(rotary_run, tmp_path):
    _, run, _, proc = rotary_run
    train = loss_curves(run)["train_loss"]
    start = float(np.mean([train[s] for s in range(5)]))
    end = float(np.mean([train[s] for s in range(290, 300)]))
    assert start > 5.0  # ~ln(1024) untrained
    print(f"rotary training loss: {start:.2f} -> {end:.2f}")
    assert end < 0.7 * start, (start, end)
    model = run / "rotary.pt"
    assert f"render --model {model}" in proc.stdout + proc.stderr
    meta = json.loads(model.with_suffix(".json").read_text())
    assert meta["codec"] == TONE_CODEC and meta["max_seq_len"] == 64
    loaded = load_family(str(model))
    assert loaded.facts.name == "rotary" and loaded.model.cfg.depth == 2
    run_cli("render", "--model", model, "--seconds", "1", "--seed", "1",
            "--tokens-out", tmp_path / "t.npy", "--out", tmp_path / "o.wav")
    tokens = np.load(tmp_path / "t.npy")
    assert tokens.shape == (75, 2) and tokens.min() >= 0 and tokens.max() < 1024
    live = run_cli("--model", model, "--device", "null", "--seconds", "2", "--no-status",
                   "--osc-port", "0", "--tap", tmp_path / "tap.wav", timeout=300)
    assert "model: rotary" in live.stderr and "stopped after" in live.stderr, live.stderr
    tap, rate = sf.read(tmp_path / "tap.wav")
    assert tap.shape[0] > rate and np.abs(tap).max() > 0  # it played (and was heard)
