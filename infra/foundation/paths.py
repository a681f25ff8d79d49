"""Where Rollcall keeps its state on this machine.

Everything the project makes at run time (virtualenv aside) lives under one folder, ``var/`` in the
project by default, overridable with ``ROLLCALL_HOME``: model packs, fetched binaries, the embedded
stack's data and logs, rendered scenarios.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def home() -> Path:
    return Path(os.environ.get("ROLLCALL_HOME") or PROJECT_ROOT / "var").resolve()


def cache_dir() -> Path:
    """Downloaded registry archives, kept so a second fetch does no work."""
    return home() / "cache"


def models_dir() -> Path:
    return home() / "models"


def bin_dir() -> Path:
    return home() / "bin"


def stack_dir() -> Path:
    """The embedded stack's state, data and logs; ``ROLLCALL_STACK_DIR`` gives a private stack
    (tests use it) while models, binaries and caches stay shared under ``home()``."""
    override = os.environ.get("ROLLCALL_STACK_DIR")
    return Path(override).resolve() if override else home() / "stack"


def scenarios_dir() -> Path:
    """Rendered scenarios (videos and ground truth), one folder per scenario name."""
    return home() / "scenarios"
