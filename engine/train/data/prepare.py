"""``run_engine.py prepare``: a source of audio → a token cache (codes + prompt per clip).

Data path, per file (in a worker process)::

    read_audio (mono, 24 kHz) → crops (sources.crops_for) → per crop:
        silent? skip │ EnCodec encode → codes [Q, T] │ EnCodecMAE features → time mean [P]
    → shard arrays + JSON marker (cache.write_shard)

``num_q`` codebooks are kept (``--codebooks``: 8 = 6 kbps for EnCodecGPT, 2 = 1.5 kbps for the
rotary tutorial's recipe). With ``--encodecmae none`` no prompt is computed (``P = 0``): an
unconditional model (the rotary family) needs none, and EnCodecMAE is not even loaded.

Files are split into shards of ``shard_size`` in sorted order; a shard whose marker exists
is skipped, so an interrupted run resumes where it stopped. Bad files never stop the run:
each is listed with its reason in the shard, the summary and ``index.json``.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import queue
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine import SAMPLE_RATE
from engine.errors import UserError
from engine.model.audio_io import read_audio
from engine.model.codec import bandwidth_for_codebooks, codec_digest, codec_from_spec
from engine.model.encodecmae import load_encodecmae
from engine.train.data import cache
from engine.train.data.sources import CropRule, SourceFile, crop_rule, crops_for, list_source


@dataclass(frozen=True)
class PrepareOptions:
    src: str
    out: str
    kind: str = "auto"
    families: tuple[str, ...] = ()
    instrument_sources: tuple[str, ...] = ()
    codec: str = "facebook/encodec_24khz"
    encodecmae: str = "base"
    num_q: int = 8
    clip_seconds: float = 4.0
    min_seconds: float = 0.5
    max_clips: int | None = None
    seed: int = 0
    shard_size: int = 256
    workers: int = 1
    silence_db: float = -60.0
    trust: bool = False


@dataclass
class _Models:
    codec: object
    mae: object
    progress: object  # a multiprocessing queue (or None in-process)


_MODELS: _Models | None = None


def prepare(opts: PrepareOptions, log=print) -> dict:
    """Run (or resume) the preparation; returns the index. Raises UserError when no clip
    could be made or the folder holds a cache made with other settings."""
    kind, files = list_source(opts.src, opts.kind, families=opts.families,
                              instrument_sources=opts.instrument_sources)
    rule = crop_rule(kind, opts.clip_seconds, opts.min_seconds, opts.max_clips, opts.seed)
    out = Path(opts.out)
    codec, mae = _load_models(opts)
    plan = _plan(opts, kind, rule, files, codec, mae)
    cache.check_plan(out, plan)
    jobs = [(i, files[s : s + opts.shard_size])
            for i, s in enumerate(range(0, len(files), opts.shard_size))]
    pending = [j for j in jobs if not cache.shard_done(out, j[0])]
    log(f"prepare: {len(files)} files ({kind}) → {len(jobs)} shards in {out} "
        f"({len(jobs) - len(pending)} already done)")
    done_files = sum(len(f) for i, f in jobs if cache.shard_done(out, i))
    with tqdm(total=len(files), initial=done_files, unit="file", desc="prepare",
              dynamic_ncols=True, file=sys.stderr,
              mininterval=0.1 if sys.stderr.isatty() else 5.0) as bar:
        if opts.workers <= 1:
            _run_inline(pending, out, rule, opts, codec, mae, bar)
        else:
            _run_pool(pending, out, rule, opts, bar)
    index = cache.write_index(out, plan, len(jobs))
    _summary(index, out, log)
    if index["clips"] == 0:
        raise UserError(f"{opts.src}: no usable clips (every file was skipped; reasons above)")
    return index


NO_PROMPTS = "none"  # --encodecmae none: codes only


def _load_mae(spec: str, trust: bool):
    return None if spec == NO_PROMPTS else load_encodecmae(spec, cache_dir=None, trust=trust)


def _load_models(opts: PrepareOptions):
    bandwidth_for_codebooks(opts.num_q)  # 2, 4, 8, 16 or 32 (a one-line error otherwise)
    return codec_from_spec(opts.codec), _load_mae(opts.encodecmae, opts.trust)


def _plan(opts, kind, rule: CropRule, files: list[SourceFile], codec, mae) -> dict:
    listing = hashlib.sha256("\n".join(f.rel for f in files).encode()).hexdigest()
    return {"source": str(Path(opts.src).resolve()), "kind": kind, "crop": asdict(rule),
            "num_q": opts.num_q, "silence_db": opts.silence_db, "shard_size": opts.shard_size,
            "files": len(files), "files_sha256": listing,
            "codec": {"spec": opts.codec, "sha256": codec_digest(codec)},
            "encodecmae": ({"spec": NO_PROMPTS, "sha256": None, "dim": 0} if mae is None
                           else {"spec": opts.encodecmae, "sha256": mae.weights_sha256,
                                 "dim": mae.dim})}


def _run_inline(pending, out, rule, opts, codec, mae, bar) -> None:
    global _MODELS
    _MODELS = _Models(codec, mae, None)
    for index, files in pending:
        _process_shard(index, files, str(out), rule, opts.num_q, opts.silence_db,
                       on_file=lambda: bar.update(1))


def _run_pool(pending, out, rule, opts, bar) -> None:
    ctx = mp.get_context("spawn")  # fork after torch threads started is unsafe
    progress = ctx.Queue()
    args = (opts.codec, opts.encodecmae, opts.trust, progress)
    with ProcessPoolExecutor(opts.workers, mp_context=ctx, initializer=_init_worker,
                             initargs=args) as pool:
        futures = {pool.submit(_process_shard, i, f, str(out), rule, opts.num_q,
                               opts.silence_db) for i, f in pending}
        while futures:
            finished, futures = wait(futures, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress, bar)
            for fut in finished:
                fut.result()  # a crashed worker: finished shards stay, the rerun resumes
        _drain(progress, bar)


def _drain(progress, bar) -> None:
    while True:
        try:
            bar.update(progress.get_nowait())
        except queue.Empty:
            return


def _init_worker(codec_spec: str, mae_spec: str, trust: bool, progress) -> None:
    global _MODELS
    torch.set_num_threads(1)  # one process per core does better than threads here
    _MODELS = _Models(codec_from_spec(codec_spec), _load_mae(mae_spec, trust), progress)


def _process_shard(index: int, files: list[SourceFile], out: str, rule: CropRule, num_q: int,
                   silence_db: float, on_file=None) -> int:
    result = cache.ShardResult()
    for f in files:
        try:
            _process_file(f, rule, num_q, silence_db, result)
        except UserError as e:
            result.skipped.append({"file": f.rel, "reason": str(e).removeprefix(f"{f.path}: ")})
        except Exception as e:  # one odd file must not cost the whole run
            result.skipped.append({"file": f.rel, "reason": f"{type(e).__name__}: {e}"})
        if on_file is not None:
            on_file()
        elif _MODELS.progress is not None:
            _MODELS.progress.put(1)
    dim = 0 if _MODELS.mae is None else _MODELS.mae.dim
    cache.write_shard(Path(out), index, result, dim, num_q)
    return len(result.clips)


def _process_file(f: SourceFile, rule: CropRule, num_q: int, silence_db: float,
                  result: cache.ShardResult) -> None:
    audio = read_audio(f.path, SAMPLE_RATE)
    crops = crops_for(rule, f.rel, len(audio), SAMPLE_RATE)
    if not crops:
        need = rule.min_seconds if rule.kind == "whole" else rule.clip_seconds
        raise UserError(f"{f.path}: too short ({len(audio) / SAMPLE_RATE:.2f} s < {need} s)")
    silent = 0
    for start, length in crops:
        clip = audio[start : start + length]
        level = _rms_db(clip)
        if level < silence_db:
            silent += 1
            continue
        codes = _MODELS.codec.encode(torch.from_numpy(clip)[None, None], num_q)[0]  # [Q, T]
        prompt = (np.zeros(0, np.float32) if _MODELS.mae is None
                  else _MODELS.mae.mae.features(clip).mean(axis=0))
        result.add(codes.T.numpy(), prompt, {
            "id": f"{f.rel}#{start}", "file": f.rel, "start": start / SAMPLE_RATE,
            "seconds": length / SAMPLE_RATE, "frames": int(codes.shape[1])})
    if silent == len(crops):
        raise UserError(f"{f.path}: silent (level below {silence_db:g} dBFS)")


def _rms_db(clip: np.ndarray) -> float:
    rms = math.sqrt(float(np.mean(np.square(clip, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def _summary(index: dict, out: Path, log) -> None:
    log(f"prepared {index['clips']} clips, {index['hours']:.3f} h "
        f"({index['frames']} frames) in {len(index['shards'])} shards → {out}/index.json")
    skipped = index["skipped"]
    if skipped:
        log(f"skipped {len(skipped)} files:")
        for s in skipped[:20]:
            log(f"  {s['file']}: {s['reason']}")
        if len(skipped) > 20:
            log(f"  … and {len(skipped) - 20} more (all listed in index.json)")
