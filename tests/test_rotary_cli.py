"""``--model`` recognises the rotary family from the file it names, and ``render`` plays it:
greedy tokens equal x-transformers' own one-token loop; ``--checkpoint`` is an alias."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.cli.main import main

xt = pytest.importorskip("x_transformers")


@pytest.fixture(scope="module")
def rotary_file(tmp_path_factory):
    torch.manual_seed(0)
    model = xt.TransformerWrapper(num_tokens=1024, max_seq_len=40, attn_layers=xt.Decoder(
        dim=64, depth=2, heads=2, rotary_pos_emb=True)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("rotary")
    torch.save(model.state_dict(), folder / "guitar.pt")  # the tutorial's torch.save(state_dict)
    (folder / "guitar.json").write_text(json.dumps({"heads": 2, "codebooks": 2,
                                                    "max_seq_len": 40}))
    return model, folder / "guitar.pt"


@pytest.mark.parametrize("flag", ["--model", "--checkpoint"])
def test_render_greedy_equals_the_recipe_loop(rotary_file, tmp_path, flag):
    model, path = rotary_file
    tokens, wav = tmp_path / "codes.npy", tmp_path / "out.wav"
    assert main(["render", flag, str(path), "--codec", "random:0", "--frames", "15",
                 "--greedy", "--tokens-out", str(tokens), "--out", str(wav)]) == 0
    seq = torch.zeros(1, 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(30):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    codes = np.load(tokens)  # [T, Q]
    assert codes.shape == (15, 2)
    assert codes.reshape(-1).tolist() == seq[0, 1:].tolist()
    audio, rate = sf.read(wav)
    assert rate == 24_000 and len(audio) == 15 * 320


def test_wrong_heads_is_a_one_line_error(rotary_file, tmp_path, capsys):
    _, path = rotary_file
    code = main(["render", "--model", str(path), "--heads", "3", "--codec", "random:0",
                 "--frames", "2", "--tokens-out", str(tmp_path / "t.npy")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
