"""``python -m osc.surfaces``: regenerate the control-surface files in ``max_patches/``."""

from osc.surfaces.generate import write_all

for path in write_all():
    print(path)
