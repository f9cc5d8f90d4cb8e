"""Shared fixtures for tern's system tests: where the binary and repo are."""
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def tern_bin():
    path = os.environ.get("TERN_BIN", os.path.join(REPO, "build", "tern"))
    if not os.access(path, os.X_OK):
        pytest.fail("tern binary not found at %s (build it first, or set TERN_BIN)" % path)
    return path


@pytest.fixture
def tern(tern_bin):
    """Run tern with arguments; returns the CompletedProcess (text mode)."""
    def run(*args, stdin=None, cwd=None):
        return subprocess.run([tern_bin, *args], input=stdin, capture_output=True, text=True,
                              cwd=cwd or REPO, timeout=60)
    return run
