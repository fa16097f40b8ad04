"""``run_engine.py prepare``: sources, crops, the cache's contents, skips, resume, errors."""

import json

import numpy as np
import pytest
from fixtures import TONE_CODEC as CODEC
from fixtures import needs_fixtures
from live_helpers import run_cli
from tone_dataset import tone

from engine.errors import UserError
from engine.train.data.sources import crop_rule, crops_for, list_source

pytestmark = needs_fixtures

@pytest.mark.slow
def test_prepare_makes_clips_and_lists_skipped_files(tone_cache):
    root, proc = tone_cache
    index = json.loads((root / "cache" / "index.json").read_text())
    assert index["clips"] == 200 and len(index["shards"]) == 4
    reasons = {s["file"]: s["reason"] for s in index["skipped"]}
    assert set(reasons) == {"broken.wav", "quiet/silent.flac"}
    assert "not a readable audio file" in reasons["broken.wav"]
    assert "silent" in reasons["quiet/silent.flac"]
    assert "prepared 200 clips" in proc.stdout and "broken.wav" in proc.stdout
    assert abs(index["hours"] - index["frames"] / 75 / 3600) < 1e-9


@pytest.mark.slow
def test_cached_clip_equals_an_independent_encode(tone_cache, mae_dir):
    """Codes and prompt of a clip equal encoding the file directly (codec + EnCodecMAE)."""
    from engine.model.codec import load_codec
    from engine.model.encodecmae import load_encodecmae

    root, _ = tone_cache
    meta = json.loads((root / "cache" / "shards" / "shard-00001.json").read_text())
    with np.load(root / "cache" / "shards" / "shard-00001.npz") as z:
        codes, offsets, prompts = z["codes"], z["offsets"], z["prompts"]
    codec = load_codec(CODEC)
    mae = load_encodecmae(str(mae_dir), cache_dir=None)
    for i in (0, 17):
        path = root / "src" / meta["clips"][i]["file"]
        want = codec.encode_file(path, 8).numpy()  # [Q, T]
        np.testing.assert_array_equal(codes[offsets[i] : offsets[i + 1]].T, want)
        np.testing.assert_allclose(prompts[i], mae.frames(path).mean(axis=0), atol=1e-5)


@pytest.mark.slow
def test_prepare_resumes_finished_shards(tone_cache, mae_dir):
    root, _ = tone_cache
    cache = root / "cache"
    before = json.loads((cache / "index.json").read_text())
    (cache / "shards" / "shard-00002.json").unlink()  # as if killed while writing shard 2
    proc = run_cli("prepare", root / "src", "--out", cache, "--codec", CODEC,
                   "--encodecmae", mae_dir, "--workers", "1", "--shard-size", "64")
    assert "(3 already done)" in proc.stdout
    after = json.loads((cache / "index.json").read_text())
    assert after == before
    other = run_cli("prepare", root / "src", "--out", cache, "--codec", CODEC,
                    "--encodecmae", mae_dir, "--shard-size", "64", "--clip-seconds", "2",
                    ok=False)
    assert other.returncode == 2 and "other settings (crop differ)" in other.stderr


@pytest.mark.slow
def test_empty_folder_is_a_clear_error(tmp_path, mae_dir):
    (tmp_path / "empty").mkdir()
    proc = run_cli("prepare", tmp_path / "empty", "--out", tmp_path / "cache", "--codec", CODEC,
                   "--encodecmae", mae_dir, ok=False)
    assert proc.returncode == 2
    assert "no audio files found" in proc.stderr and "Traceback" not in proc.stderr


def test_nsynth_split_filtered_by_family_and_source(tmp_path):
    split = tmp_path / "nsynth-valid"
    (split / "audio").mkdir(parents=True)
    notes = {"guitar_acoustic_000-060-100": ("guitar", "acoustic"),
             "guitar_electronic_001-062-100": ("guitar", "electronic"),
             "keyboard_acoustic_002-064-100": ("keyboard", "acoustic")}
    meta = {n: {"instrument_family_str": f, "instrument_source_str": s, "pitch": 60}
            for n, (f, s) in notes.items()}
    (split / "examples.json").write_text(json.dumps(meta))
    kind, files = list_source(split, families=("guitar",))
    assert kind == "nsynth"
    assert [f.rel for f in files] == ["audio/guitar_acoustic_000-060-100.wav",
                                      "audio/guitar_electronic_001-062-100.wav"]
    _, files = list_source(split / "examples.json", families=("guitar",),
                           instrument_sources=("acoustic",))
    assert [f.rel for f in files] == ["audio/guitar_acoustic_000-060-100.wav"]
    with pytest.raises(UserError, match="no notes match"):
        list_source(split, families=("flute",))


def test_librilight_crops_are_seeded_non_overlapping_and_capped():
    rule = crop_rule("librilight", 4.0, 0.5, None, seed=3)
    rate, n = 24000, 24000 * 95  # 95 s: 23 slots of 4 s
    crops = crops_for(rule, "spk/book/a.flac", n, rate)
    assert len(crops) == 10 and all(length == 4 * rate for _, length in crops)
    starts = [s for s, _ in crops]
    assert starts == sorted(starts)
    assert all(b - a >= 4 * rate for a, b in zip(starts, starts[1:], strict=False))
    assert starts[-1] + 4 * rate <= n
    assert crops_for(rule, "spk/book/a.flac", n, rate) == crops  # deterministic
    assert crops_for(rule, "spk/book/b.flac", n, rate) != crops  # per file
    assert crops_for(rule, "x.flac", 3 * rate, rate) == []  # shorter than one crop


def test_folder_files_are_cut_into_consecutive_clips():
    rule = crop_rule("folder", 4.0, 0.5, None, seed=0)
    rate = 24000
    tail, short_tail = 40_800, 7_200  # 1.7 s kept, 0.3 s < --min-seconds dropped
    assert crops_for(rule, "a.wav", 8 * rate + tail, rate) == [
        (0, 4 * rate), (4 * rate, 4 * rate), (8 * rate, tail)]
    assert crops_for(rule, "a.wav", 8 * rate + short_tail, rate) == [
        (0, 4 * rate), (4 * rate, 4 * rate)]


def test_tone_generator_makes_distinct_timbres():
    rng = np.random.default_rng(0)
    spectra = [np.abs(np.fft.rfft(tone(220.0, t, 1.0, rng))) for t in ("sine", "saw")]
    harmonic2 = [s[440] / s[220] for s in spectra]  # 1 Hz bins
    assert harmonic2[0] < 0.01 < 0.3 < harmonic2[1]
