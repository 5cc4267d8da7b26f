"""External programs the integration tests run for real.

`make test` installs them (its `java` and `test-tools` steps); a missing one is a failure that says
how to install it, never a skip, so that the README's test command tests what it claims.
"""

from __future__ import annotations

import shutil

import pytest

__all__ = ["require"]

# program -> how a user gets it
INSTALL = {
    "prometheus": "apt-get install -y prometheus (make test does it)",
    "promtool": "apt-get install -y prometheus (make test does it)",
    "java": "apt-get install -y openjdk-17-jre-headless (make test does it)",
    "Xvfb": "apt-get install -y xvfb (make test does it)",
    "xwininfo": "apt-get install -y x11-utils (make test does it)",
    "xdotool": "apt-get install -y xdotool (make test does it)",
    "import": "apt-get install -y imagemagick (make test does it)",
}


def require(program: str) -> str:
    """The path of ``program``, or a test failure naming the command that installs it."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} not found: {INSTALL.get(program, 'install it')}", pytrace=False)
    return path
