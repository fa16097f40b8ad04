import numpy as np
import pytest
import soundfile as sf
import torch
from fixtures import golden, ref

from engine.errors import UserError
from engine.model.audio_io import read_audio
from engine.model.encodecmae import load_encodecmae
from engine.model.loading.gin_sizes import find_binding, parse_gin


@pytest.fixture(scope="module")
def encoder(mae_dir, tmp_path_factory):
    return load_encodecmae(str(mae_dir), cache_dir=tmp_path_factory.mktemp("prompt-cache"))


def test_features_and_prompt_match_reference(encoder):
    g = golden("encodecmae_A.npz")
    feats = encoder.frames(ref("signal_A.wav"))
    assert feats.shape == (300, 64) and feats.dtype == np.float32
    assert np.abs(feats - g["features"]).max() < 1e-4
    assert np.abs(encoder.prompt(ref("signal_A.wav")) - g["prompt_mean"]).max() < 1e-4


def test_two_chunks_with_padded_frame(encoder):
    """5.5 s = one 4 s chunk + a 36000-sample chunk whose last frame is masked as a key."""
    a = read_audio(ref("signal_A.wav"), 24000)
    feats = encoder.mae.features(np.concatenate([a, a[:36000]]))
    assert feats.shape == (413, 64)
    assert np.abs(feats - golden("encodecmae_A.npz")["Aext_features"]).max() < 1e-4


def test_projected_positional_input(encoder):
    """The intermediate feat_projector(emb) + scale·PE matches the reference."""
    g = golden("encodecmae_A.npz")
    a = torch.from_numpy(read_audio(ref("signal_A.wav"), 24000))
    mae = encoder.mae
    with torch.no_grad():
        emb = mae.wav_encoder(a[None, None]).permute(0, 2, 1)
        from engine.model.encodecmae import sinusoidal_pe
        x = mae.feat_projector(emb) + mae.positional_encoder.scale * sinusoidal_pe(300, 64)[None]
    assert np.abs(x.numpy() - g["projected_posenc"]).max() < 1e-4


def test_cache_by_content_hash(encoder, tmp_path, monkeypatch):
    a = read_audio(ref("signal_A.wav"), 24000)
    import soundfile as sf
    sf.write(tmp_path / "x.wav", a, 24000, subtype="FLOAT")
    first = encoder.prompt(tmp_path / "x.wav")
    calls = []
    real = encoder.frames
    monkeypatch.setattr(encoder, "frames", lambda p: calls.append(p) or real(p))
    assert np.array_equal(encoder.prompt(tmp_path / "x.wav"), first) and calls == []
    sf.write(tmp_path / "x.wav", a[::-1].copy(), 24000, subtype="FLOAT")  # same name, new content
    second = encoder.prompt(tmp_path / "x.wav")
    assert len(calls) == 1 and not np.allclose(second, first)


def test_gin_reader_on_base_style_config():
    text = """
    MODEL_DIM=768
    NUM_ENCODER_HEADS=12
    encoder/tasks.models.transformers.MultiHeadAttention:
        model_dim=%MODEL_DIM
        num_heads=%NUM_ENCODER_HEADS   # a comment
    tasks.models.encodecmae.encoders.EncodecEncoder.scale = 0.5
    torch.optim.AdamW:
        betas=(0.9,0.95)
    """
    gin = parse_gin("\n".join(line[4:] for line in text.splitlines()))
    assert find_binding(gin, "encoder/tasks.models.transformers.MultiHeadAttention.num_heads") == 12
    assert find_binding(gin, "encoders.EncodecEncoder.scale") == 0.5
    assert gin["torch.optim.AdamW.betas"] == (0.9, 0.95)


def test_missing_files_are_clear(tmp_path):
    with pytest.raises(UserError, match="model.pt"):
        load_encodecmae(str(tmp_path))
    with pytest.raises(UserError, match="names: small, base"):
        load_encodecmae("nonsense")


def test_a_long_file_is_embedded_from_its_first_seconds_only(encoder, tmp_path):
    """``max_seconds`` (the live engine's ``--prompt-seconds``): the prompt of a long file is
    the prompt of a file holding only its first seconds, and the cache keeps them apart."""
    a = read_audio(ref("signal_A.wav"), 24000)
    long = np.concatenate([a, a[::-1], 0.5 * a] * 4)
    sf.write(tmp_path / "long.wav", long, 24000, subtype="FLOAT")
    sf.write(tmp_path / "head.wav", long[: 3 * 24000], 24000, subtype="FLOAT")
    head = encoder.prompt(tmp_path / "head.wav")
    assert np.allclose(encoder.prompt(tmp_path / "long.wav", max_seconds=3), head, atol=1e-6)
    whole = encoder.prompt(tmp_path / "long.wav")
    assert not np.allclose(whole, head, atol=1e-3)
    assert np.allclose(encoder.prompt(tmp_path / "long.wav", max_seconds=3), head, atol=1e-6)
