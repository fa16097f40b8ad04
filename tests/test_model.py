import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_random_model
from fixtures import golden

from engine.errors import UserError
from engine.model.codec import random_codec
from engine.model.loading.checkpoint import from_pretrained, load_checkpoint, save_pretrained


def test_checkpoint_loads_strictly_with_config_beside(loaded):
    cfg = loaded.model.gpt.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd) == (2, 2, 64)
    assert loaded.model.num_q == 8 and loaded.model.prompt_proj is None


def test_forward_logits_match_reference(loaded):
    g = golden("encodecgpt_A.npz")
    with torch.no_grad():
        logits = loaded.model.training_logits(torch.from_numpy(g["prompt_p0"])[None],
                                              torch.from_numpy(g["delayed_codes"]))
    assert logits.shape == (1, 308, 8, 1025)
    assert np.abs(logits.numpy() - g["preds"]).max() < 1e-4
    assert np.array_equal(logits.argmax(-1).numpy(), g["preds_argmax"])
    # The reference training loss for this pair (fixture README): 7.0973.
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].permute(0, 3, 1, 2), torch.from_numpy(g["delayed_codes"]).transpose(1, 2))
    assert abs(loss.item() - 7.0973) < 1e-3


def _lightning_file(model, codec, path, old_buffers=False):
    state = {k: v for k, v in model.state_dict().items()}
    state.update({f"encodec_model.{k}": v for k, v in _encodec_package_state(codec).items()})
    if old_buffers:  # transformers < 4.3x saved these masks; they must be ignored
        for i in range(model.gpt.config.n_layer):
            state[f"gpt.h.{i}.attn.bias"] = torch.ones(1, 1, 8, 8)
            state[f"gpt.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save({"state_dict": state, "global_step": 10}, path)


def _encodec_package_state(codec):
    """The inverse key mapping (test-only), to write an encodec-package layout."""
    import re
    out = {}
    for k, v in codec.model.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        k = k.replace("parametrizations.weight.original1", "weight_v")
        k = re.sub(r"^(encoder|decoder)\.layers\.", r"\1.model.", k)
        k = re.sub(r"^quantizer\.layers\.(\d+)\.codebook\.",
                   r"quantizer.vq.layers.\1._codebook.", k)
        if k.endswith("lstm." + k.split(".")[-1]) or "quantizer" in k:
            out[k] = v
            continue
        convtr = k.startswith("decoder.model.") and k.split(".")[2] in {"3", "6", "9", "12"}
        k = re.sub(r"\.conv\.", ".convtr.convtr." if convtr and ".block." not in k
                   and ".shortcut." not in k else ".conv.conv.", k)
        out[k] = v
    return out


def test_sizes_inferred_without_config_json(tmp_path):
    """n_head = n_embd / 64 when no config.json is beside the file; old buffers ignored."""
    model = tiny_random_model(n_embd=128, n_head=2)
    codec = random_codec(1)
    _lightning_file(model, codec, tmp_path / "run.ckpt", old_buffers=True)
    back = load_checkpoint(tmp_path / "run.ckpt")
    assert back.model.gpt.config.n_head == 2 and back.model.gpt.config.n_layer == 2
    tokens = torch.randint(0, 1025, (1, 12, 8))
    prompt = torch.randn(1, 128)
    with torch.no_grad():
        assert torch.allclose(model(prompt, tokens)[0], back.model(prompt, tokens)[0], atol=1e-6)
    codes = torch.randint(0, 1024, (1, 8, 10))
    assert torch.allclose(codec.decode(codes), back.codec.decode(codes), atol=1e-6)


def test_save_pretrained_round_trip(tmp_path, loaded):
    save_pretrained(loaded.model, loaded.codec, tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["format"] == "encodecgpt-live"
    back = from_pretrained(tmp_path / "ours")
    g = golden("encodecgpt_A.npz")
    with torch.no_grad():
        logits = back.model.training_logits(torch.from_numpy(g["prompt_p0"])[None],
                                            torch.from_numpy(g["delayed_codes"]))
    assert np.abs(logits.numpy() - g["preds"]).max() < 1e-4
    assert torch.equal(back.codec.encode(torch.zeros(1, 1, 3200), 8),
                       loaded.codec.encode(torch.zeros(1, 1, 3200), 8))
    assert load_checkpoint(tmp_path / "ours").model.num_q == 8  # folders load through the same door


def test_prompt_projection_only_when_sizes_differ():
    assert tiny_random_model(n_embd=128, prompt_dim=128).prompt_proj is None
    model = tiny_random_model(n_embd=128, prompt_dim=64)
    logits, _ = model(torch.randn(2, 64), torch.randint(0, 1025, (2, 5, 8)))
    assert logits.shape == (2, 6, 8, 1025)


def test_kv_cache_continuation_equals_full_forward():
    model = tiny_random_model()
    prompt, tokens = torch.randn(1, 128), torch.randint(0, 1025, (1, 9, 8))
    with torch.no_grad():
        full, _ = model(prompt, tokens)
        part, cache = model(prompt, tokens[:, :4], use_cache=True)
        rest, _ = model(None, tokens[:, 4:], past_key_values=cache, use_cache=True)
    assert torch.allclose(torch.cat([part, rest], 1), full, atol=1e-5)


def test_wrong_checkpoint_kind(tmp_path, mae_dir):
    with pytest.raises(UserError, match="not an EnCodecGPT checkpoint"):
        load_checkpoint(mae_dir / "model.pt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        load_checkpoint(tmp_path / "empty.ckpt")
    with pytest.raises(UserError, match="no such file"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_exported_model_files_are_readable_by_everyone(tmp_path):
    from engine.model.loading.checkpoint import save_pretrained
    from engine.model.loading.random_model import random_model

    model, codec = random_model({"preset": "tiny", "weights_seed": 0, "prompt_dim": 16})
    folder = save_pretrained(model, codec, tmp_path / "export")
    modes = {p.relative_to(folder).as_posix(): p.stat().st_mode & 0o777
             for p in folder.rglob("*") if p.is_file()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes


@pytest.mark.parametrize("trust", [False, True], ids=["weights-only", "trusted"])
def test_a_text_file_a_wav_or_a_truncated_checkpoint_is_refused_by_name(tmp_path, ckpt_path,
                                                                        trust):
    """What the legacy unpickler chokes on with ``KeyError: 101`` / ``IndexError`` (a text
    file, a WAV) and a cut-off archive: each a UserError naming the file and what it is."""
    text = tmp_path / "notes.ckpt"
    text.write_text("hello, this is not a checkpoint\n")
    wav = tmp_path / "tone.wav"
    sf.write(wav, np.zeros(2400, np.float32), 24000)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(ckpt_path.read_bytes()[:5000])
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(bytes(range(250, 256)) * 100)
    for path, what in [(text, "a text file"), (wav, "a WAV audio file"),
                       (cut, "not a readable PyTorch checkpoint"), (junk, "unknown contents")]:
        with pytest.raises(UserError, match=what) as err:
            load_checkpoint(path, trust=trust)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
