"""The tests run real experiments: as root, with a nextmini binary ($NEXTMINI_BIN, else the
repository's target/debug or target/release build)."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

if "NEXTMINI_BIN" not in os.environ:
    for build in ("debug", "release"):
        candidate = ROOT / "target" / build / "nextmini"
        if candidate.exists():
            os.environ["NEXTMINI_BIN"] = str(candidate)
            break


@pytest.fixture
def root_only():
    if os.geteuid() != 0:
        pytest.fail("these tests create namespaces: run them as root (as .ci/run does)")
