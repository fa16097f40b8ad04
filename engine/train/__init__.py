"""Training: token caches (:mod:`engine.train.data`) and the Lightning task (``task``)."""
