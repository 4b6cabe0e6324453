"""Shared by the tests that run jaxstyle in a subprocess (pytest puts ``tests/`` on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def offline_env(home: Path) -> dict[str, str]:
    """The environment of a subprocess with its own ``$JAXSTYLE_HOME`` that cannot download."""
    env = dict(os.environ)
    env["JAXSTYLE_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[var] = "http://127.0.0.1:9"  # discard port: any download attempt fails at once
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    return env
