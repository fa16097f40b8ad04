"""The published models by short name, offline, from a folder laid out like the hub cache;
the EnCodecMAE pairing check; ``--list-models``."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
from fixtures import manifest, needs_fixtures, ref

from engine.cli.main import main
from engine.errors import UserError
from engine.model.loading.checkpoint import from_pretrained, load_checkpoint
from engine.model.loading.pairing import choose_encodecmae
from engine.model.loading.published import NAMES, resolve_model_name

REV = "0123456789abcdef0123456789abcdef01234567"
# The hub paths, written out here (not taken from the table under test).
HUB = {
    "nsynth": ("nsynth-base/nsynth-390ksteps-base.ckpt", "base", 3.0),
    "librilight": ("librilight-base/librilight-500ksteps-base.ckpt", "base", 3.0),
    "audioset": ("audioset-base-st/audioset-500ksteps-base-st.ckpt", "base-st", 10.0),
}


def fake_hub_cache(root: Path, models: tuple[str, ...], maes: tuple[str, ...] = ()) -> Path:
    """``root`` laid out like the Hugging Face hub cache: refs/main and snapshots/<rev>/…,
    the fixture checkpoint under each named model's path (with its GPT2 config.json)."""
    repo = root / "models--lpepino--encodecgpt"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    for name in models:
        file = repo / "snapshots" / REV / HUB[name][0]
        file.parent.mkdir(parents=True, exist_ok=True)
        file.symlink_to(ref("encodecgpt_tiny.ckpt"))
        (file.parent / "config.json").write_text(
            json.dumps(manifest()["encodecgpt_ckpt"]["gpt2_config"]))
    for mae in maes:
        mrepo = root / f"models--lpepino--encodecmae-{mae}"
        (mrepo / "refs").mkdir(parents=True, exist_ok=True)
        (mrepo / "refs" / "main").write_text(REV)
        (mrepo / "snapshots" / REV).mkdir(parents=True)
        (mrepo / "snapshots" / REV / "model.pt").write_bytes(b"x")
    return root


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return root


def test_names_resolve_to_their_hub_paths_encodecmae_and_context():
    assert set(NAMES) == set(HUB)
    for name, (path, mae, context) in HUB.items():
        assert resolve_model_name(name) == (f"lpepino/encodecgpt/{path}", mae, context)
        assert resolve_model_name(name.upper()) == resolve_model_name(name)
    assert resolve_model_name("runs/guitar/last.ckpt") is None
    assert resolve_model_name("base") is None


@needs_fixtures
@pytest.mark.parametrize("name", ["nsynth", "audioset"])
def test_short_name_loads_the_cached_file_offline(hub_cache, name):
    fake_hub_cache(hub_cache, (name,))
    loaded = load_checkpoint(name)
    assert loaded.source == f"lpepino/encodecgpt/{HUB[name][0]}"
    assert (loaded.encodecmae, loaded.pairing, loaded.context_s) == (HUB[name][1], "published",
                                                                      HUB[name][2])
    direct = load_checkpoint(ref("encodecgpt_tiny.ckpt"))
    assert loaded.sha256 == direct.sha256


@needs_fixtures
def test_short_name_not_in_cache_names_the_file(hub_cache):
    fake_hub_cache(hub_cache, ("nsynth",))
    with pytest.raises(UserError, match="librilight-base/librilight-500ksteps-base.ckpt"):
        load_checkpoint("librilight")


def test_local_file_named_like_a_model_is_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("audioset").write_bytes(b"")
    with pytest.raises(UserError, match="audioset: file is empty"):
        load_checkpoint("audioset")


def test_pairing_rules():
    assert choose_encodecmae("base-st", "published", None) == ("base-st", None)
    assert choose_encodecmae("base-st", "published", "lpepino/encodecmae-base-st")[1] is None
    with pytest.raises(UserError, match="trained with EnCodecMAE base-st .*--force-encodecmae"):
        choose_encodecmae("base-st", "published", "base", model="audioset")
    chosen, warning = choose_encodecmae("base-st", "published", "base", force=True)
    assert chosen == "base" and "--force-encodecmae" in warning
    chosen, warning = choose_encodecmae(None, "unknown", None)
    assert chosen == "base" and "unknown" in warning


@needs_fixtures
def test_render_refuses_the_wrong_encodecmae_in_one_line(hub_cache, tmp_path, capsys):
    fake_hub_cache(hub_cache, ("audioset",))
    code = main(["render", "--checkpoint", "audioset", "--encodecmae", "base", "--prompt",
                 "x.wav", "--frames", "8", "--tokens-out", str(tmp_path / "t.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: --encodecmae base:") and "base-st" in err[0]


@needs_fixtures
def test_export_records_the_pairing(hub_cache, tmp_path, capsys):
    fake_hub_cache(hub_cache, ("audioset",))
    assert main(["export", "audioset", "--out", str(tmp_path / "exp")]) == 0
    folder = from_pretrained(tmp_path / "exp")
    assert (folder.encodecmae, folder.pairing, folder.context_s) == ("base-st", "recorded", 10.0)
    with pytest.raises(UserError, match="trained with EnCodecMAE base-st"):
        choose_encodecmae(folder.encodecmae, folder.pairing, "base")


@needs_fixtures
def test_bare_file_pairing_unknown_warns(ckpt_path, capsys):
    from engine.cli.models import load_paired_checkpoint

    class Args:
        checkpoint, trust_checkpoint, encodecmae, force_encodecmae = str(ckpt_path), False, \
            None, False

    args = Args()
    loaded = load_paired_checkpoint(args)
    assert loaded.checkpoint.pairing == "unknown" and args.encodecmae == "base"
    assert "unknown" in capsys.readouterr().err


@needs_fixtures
def test_list_models_offline_shows_the_cache(hub_cache, capsys):
    fake_hub_cache(hub_cache, ("audioset",), maes=("base-st",))
    assert main(["--list-models"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    for name, (path, mae, _) in HUB.items():
        assert f"lpepino/encodecgpt/{path}" in lines[name] and f" {mae} " in lines[name]
    assert "checkpoint + encodecmae" in lines["audioset"]
    assert "no (downloaded" in lines["nsynth"]
    assert str(hub_cache) in out


@needs_fixtures
def test_live_engine_refuses_the_wrong_encodecmae_before_playing(hub_cache, capsys):
    fake_hub_cache(hub_cache, ("audioset",))
    code = main(["--checkpoint", "audioset", "--encodecmae", "large", "--device", "null",
                 "--seconds", "1", "--no-status"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert code == 2 and len(err) == 1 and "EnCodecMAE base-st" in err[0]
