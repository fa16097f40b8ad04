import numpy as np
import pytest
import soundfile as sf
import torch
from fixtures import golden, needs_fixtures, ref

from engine.errors import UserError
from engine.model.audio_io import read_audio
from engine.model.codec import (
    bandwidth_for_codebooks,
    codebooks_for_bandwidth,
    codec_from_file,
    convert_encodec_state_dict,
    load_codec,
)


def test_bandwidth_to_codebooks():
    assert [codebooks_for_bandwidth(b) for b in (1.5, 3, 6, 12, 24)] == [2, 4, 8, 16, 32]
    assert bandwidth_for_codebooks(8) == 6.0
    with pytest.raises(UserError):
        codebooks_for_bandwidth(7.0)


def test_key_mapping_examples():
    state = {
        "decoder.model.3.convtr.convtr.weight_g": torch.zeros(1),
        "encoder.model.1.block.1.conv.conv.weight_v": torch.zeros(1),
        "encoder.model.13.lstm.weight_ih_l0": torch.zeros(1),
        "quantizer.vq.layers.5._codebook.embed": torch.zeros(1),
    }
    assert sorted(convert_encodec_state_dict(state)) == sorted([
        "decoder.layers.3.conv.parametrizations.weight.original0",
        "encoder.layers.1.block.1.conv.parametrizations.weight.original1",
        "encoder.layers.13.lstm.weight_ih_l0",
        "quantizer.layers.5.codebook.embed",
    ])


@pytest.fixture(scope="module")
def signal_a(ckpt_path):
    return torch.from_numpy(read_audio(ref("signal_A.wav"), 24000))[None, None]


def test_codes_bit_exact_8_and_32(loaded, signal_a):
    g = golden("encodec_A.npz")
    assert torch.equal(loaded.codec.encode(signal_a, 8), torch.from_numpy(g["codes_6kbps"]))
    assert torch.equal(loaded.codec.encode(signal_a, 32), torch.from_numpy(g["codes_32"]))


def test_embedding_and_quantized_embedding(loaded, signal_a):
    g = golden("encodec_A.npz")
    with torch.no_grad():
        emb = loaded.codec.model.encoder(signal_a).numpy()
        q = loaded.codec.model.quantizer.decode(torch.from_numpy(g["codes_6kbps"]).transpose(0, 1))
    assert np.abs(emb - g["emb"]).max() < 1e-4
    assert np.abs(q.numpy() - g["quantized_emb_6kbps"]).max() < 1e-4


@pytest.mark.parametrize("key", ["6kbps", "32"])
def test_decoded_audio(loaded, key):
    g = golden("encodec_A.npz")
    audio = loaded.codec.decode(torch.from_numpy(g[f"codes_{key}"])).numpy()
    assert audio.shape == g[f"decoded_{key}"].shape
    assert np.abs(audio - g[f"decoded_{key}"]).max() < 1e-4


def test_encodec_package_th_file_and_saved_folder(tmp_path, loaded, signal_a):
    """The encodec_24khz-d7cc33bc.th layout loads by key mapping; save_pretrained round-trips."""
    full = torch.load(ref("encodecgpt_tiny.ckpt"), weights_only=True)["state_dict"]
    th = {k[len("encodec_model."):]: v.clone() for k, v in full.items()
          if k.startswith("encodec_model.")}
    torch.save(th, tmp_path / "encodec_24khz-d7cc33bc.th")
    codec = load_codec(tmp_path / "encodec_24khz-d7cc33bc.th")
    expected = torch.from_numpy(golden("encodec_A.npz")["codes_6kbps"])
    assert torch.equal(codec.encode(signal_a, 8), expected)
    codec.model.save_pretrained(tmp_path / "folder")
    assert torch.equal(load_codec(tmp_path / "folder").encode(signal_a, 8), expected)


def test_stereo_and_other_rates(tmp_path, loaded):
    """Identical stereo channels downmix exactly; a 48 kHz file is resampled to 24 kHz."""
    mono = read_audio(ref("signal_A.wav"), 24000)
    sf.write(tmp_path / "stereo.wav", np.stack([mono, mono], 1), 24000, subtype="FLOAT")
    codes = loaded.codec.encode_file(tmp_path / "stereo.wav", 8)
    assert torch.equal(codes, torch.from_numpy(golden("encodec_A.npz")["codes_6kbps"][0]))

    t = np.arange(48000) / 48000
    sf.write(tmp_path / "sine48k.flac", 0.5 * np.sin(2 * np.pi * 440 * t), 48000)
    resampled = read_audio(tmp_path / "sine48k.flac", 24000)
    t24 = np.arange(24000) / 24000
    assert resampled.shape == (24000,)
    middle = slice(1000, 23000)  # ignore the resampler's edges
    assert np.abs(resampled[middle] - 0.5 * np.sin(2 * np.pi * 440 * t24[middle])).max() < 1e-3
    assert loaded.codec.encode_file(tmp_path / "sine48k.flac", 4).shape == (4, 75)


def test_wrong_file_kind_is_a_user_error(tmp_path, mae_dir):
    with pytest.raises(UserError, match="expected an EnCodec state dict"):
        codec_from_file(mae_dir / "model.pt")
    (tmp_path / "x.th").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="x.th"):
        load_codec(tmp_path / "x.th")


@needs_fixtures
def test_package_keys_round_trip_to_the_original_layout():
    """Training checkpoints store the codec as ``encodec_model.*`` in the package's keys."""
    from engine.model.codec import codec_from_encodec_state, encodec_package_state_dict

    original = torch.load(ref("encodecgpt_tiny.ckpt"), weights_only=True)["state_dict"]
    original = {k[len("encodec_model."):]: v for k, v in original.items()
                if k.startswith("encodec_model.")}
    ours = encodec_package_state_dict(codec_from_encodec_state(original, "fixture"))
    assert sorted(ours) == sorted(original)
    assert all(torch.equal(ours[k], original[k]) for k in original)
