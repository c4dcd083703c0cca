"""Where the toolkit caches what it derives on this machine (parsed data, compiled kernels)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$ROBUSTSNN_CACHE, else ~/.cache/robustsnn."""
    return Path(os.environ.get("ROBUSTSNN_CACHE") or Path.home() / ".cache" / "robustsnn")
