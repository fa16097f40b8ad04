"""Write every control-surface file (``python -m osc.surfaces``)."""

from __future__ import annotations

from pathlib import Path

from osc.surfaces import FOLDER, maxpat, pd, tosc


def write_all(folder: Path = FOLDER) -> list[Path]:
    """Generate every surface file into ``folder``; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in (("encodecgpt_live.maxpat", maxpat.main_patch()),
                       ("encodecgpt_live.maxhelp", maxpat.help_patch()),
                       ("encodecgpt_live.pd", pd.patch())):
        (folder / name).write_text(text)
        out.append(folder / name)
    for name, data in (("encodecgpt_live_phone.tosc", tosc.layout("phone")),
                       ("encodecgpt_live_tablet.tosc", tosc.layout("tablet"))):
        (folder / name).write_bytes(data)
        out.append(folder / name)
    return out
