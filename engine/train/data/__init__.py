"""Datasets → token caches for training (``run_engine.py prepare``) and their training views.

* :mod:`engine.train.data.sources`: which files and which crops a source folder holds (a
  plain folder, an NSynth split, a LibriLight-style tree).
* :mod:`engine.train.data.cache`: the on-disk token cache (shards + ``index.json``).
* :mod:`engine.train.data.prepare`: audio → EnCodec codes + EnCodecMAE prompt, in parallel,
  resumable.
* :mod:`engine.train.data.dataset`: the cache as training batches (step-indexed, so resumes
  are exact).
"""
