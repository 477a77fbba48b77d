"""Where the shared Fruits-360 sample lives, and how a test asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_FRUITS = ROOT.parent / "shared" / "data" / "fruits-360-light"


def shared_fruits(split: str) -> Path:
    """Return the shared Fruits-360 folder ``split`` (Training/Test), or skip the test."""
    folder = SHARED_FRUITS / split
    if not folder.is_dir():
        pytest.skip(f"shared Fruits-360 sample not found at {folder} (see shared/data/README.md)")
    return folder
