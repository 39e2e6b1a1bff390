"""Helpers of the dashboard tests: Debian's ``chromium``, headless, kept on loopback.

:func:`headless` runs the browser with a fresh profile and without its background traffic;
its own calls home that no switch turns off (component updates, the account list) go to a
dead loopback port, and every other host name resolves nowhere, so nothing a page asks for
can leave the machine. :func:`off_loopback` reads a ``--log-net-log`` file and names every
URL the browser asked for on another host — the proof that nothing tried to.

Not a test module: the dashboard tests import it (``tests.integration.browserkit``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["CHROMIUM", "headless", "off_loopback", "requested"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_DEAD = "http://127.0.0.1:9/"


def headless(
    profile: Path, *args: str, budget_ms: int = 8000, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``chromium --headless`` with ``args`` and a fresh profile folder, ``budget_ms`` of
    virtual time for the page's scripts."""
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            *("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"),
            *("--disable-background-networking", "--disable-component-update"),
            *("--disable-sync", "--no-first-run", "--no-default-browser-check"),
            *("--disable-extensions", "--disable-default-apps"),
            "--disable-features=NetworkTimeServiceQuerying,AutofillServerCommunication,"
            "MediaRouter,OptimizationHints,Translate",
            f"--component-updater=url-source={_DEAD}",
            f"--gaia-url={_DEAD}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            "--window-size=1400,2400",
            f"--virtual-time-budget={budget_ms}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HOME": str(profile)},
    )


def requested(netlog: Path) -> set[str]:
    """Every URL a ``--log-net-log`` file shows the browser asking for."""
    return set(re.findall(r'"url":"([^"]+)"', netlog.read_text(encoding="utf-8")))


def off_loopback(netlog: Path) -> list[str]:
    """The URLs of a network log on a host other than 127.0.0.1 (data: and the like aside)."""
    return sorted(
        url
        for url in requested(netlog)
        if urlsplit(url).scheme in ("http", "https", "ws", "wss", "ftp")
        and urlsplit(url).hostname != "127.0.0.1"
    )
