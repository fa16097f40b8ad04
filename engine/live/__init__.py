"""The real-time path: controls → rolling generator → streaming decoder → sink / device.

Threading model and data path: see :mod:`engine.live.engine`.
"""
