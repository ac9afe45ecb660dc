"""How the browser tests and the Docker smoke test start Debian's Chromium through Playwright
(`launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)`): one list of flags, read by both, as
two copies had drifted (the smoke test's lacked --disable-quic and --disable-sync)."""

from __future__ import annotations

__all__ = ["CHROMIUM", "CHROMIUM_ARGS"]

#: Debian's package (`apt-get install chromium`): `playwright install` cannot download browsers here.
CHROMIUM = "/usr/bin/chromium"
#: No sandbox (containers, root), no GPU, and nothing that reaches the network on its own (the
#: machines are offline; a background fetch would only slow the page down).
CHROMIUM_ARGS: tuple[str, ...] = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
)
