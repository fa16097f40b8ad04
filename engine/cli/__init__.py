"""Command lines: ``python run_engine.py [live options]`` or ``run_engine.py COMMAND ...``.

``main`` routes; ``live`` plays; ``offline`` encodes, embeds and renders; ``sessions``
replays, recovers and plots; ``train`` prepares, trains and exports.
"""
