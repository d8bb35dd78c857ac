"""Progress bars for long work (EM, training): tqdm, quiet when not a TTY or disabled."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total=None, *, desc: str = "", enabled: bool = True, unit: str = "it", leave: bool = False):
    """Return a tqdm bar that is silent unless ``enabled`` and stderr is a TTY."""
    disable = (not enabled) or not getattr(sys.stderr, "isatty", lambda: False)()
    return tqdm(total=total, desc=desc, disable=disable, unit=unit, leave=leave, dynamic_ncols=True)
