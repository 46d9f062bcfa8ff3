"""Open a report page in headless Chromium and read what a reader would see go wrong.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON
messages separated by NUL bytes on file descriptors 3 and 4), so no port, websocket library or
network is needed. The check loads the page, waits for its load event, and returns every image
with its load status, every console message and uncaught exception, and every URL the page asked
for (a self-contained page asks only for itself and ``data:`` URIs).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from phasescope.errors import PhasescopeError

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                  "--disable-default-apps", "--mute-audio", "--remote-debugging-pipe"]
_IMAGES_SCRIPT = """JSON.stringify(Array.from(document.images).map(image => ({
    alt: image.alt, complete: image.complete, width: image.naturalWidth, height: image.naturalHeight})))"""


@dataclass
class PageCheck:
    """What Chromium saw: images (alt, loaded, width, height), console messages, errors, requests."""

    images: list[dict] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)  # (level, text)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # the first 200 characters of each URL
    title: str = ""

    @property
    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions."""
        return [text for level, text in self.console if level == "error"] + self.exceptions

    @property
    def broken_images(self) -> list[str]:
        return [image["alt"] for image in self.images if not (image["complete"] and image["width"] > 0)]


def find_chromium() -> str | None:
    """The Chromium executable (``$CHROMIUM``, then chromium / chromium-browser on the PATH), or None."""
    candidates = [os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]
    for candidate in candidates:
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


class _Pipe:
    """The DevTools protocol over Chromium's pipe: send commands, collect events."""

    def __init__(self, to_browser: int, from_browser: int) -> None:
        self.to_browser, self.from_browser = to_browser, from_browser
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._read(deadline):
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise PhasescopeError(f"chromium: {method} failed: {reply['error'].get('message')}")
                    return reply.get("result", {})
                self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events += self._read(deadline)

    def _read(self, deadline: float) -> list[dict]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PhasescopeError("chromium did not answer in time")
        ready, _, _ = select.select([self.from_browser], [], [], remaining)
        if not ready:
            raise PhasescopeError("chromium did not answer in time")
        chunk = os.read(self.from_browser, 1 << 20)
        if not chunk:
            raise PhasescopeError("chromium closed its DevTools pipe (did it crash?)")
        self.buffer += chunk
        *messages, self.buffer = self.buffer.split(b"\0")
        return [json.loads(message) for message in messages if message]


def check_page(path: Path | str, chromium: str | None = None, timeout: float = 60.0,
               settle_seconds: float = 0.5) -> PageCheck:
    """Load a local HTML file in headless Chromium and report images, console and requests.

    Args:
        path: the HTML file.
        chromium: the browser executable (default: :func:`find_chromium`).
        timeout: seconds for the browser to start and the page to load.
        settle_seconds: extra time after the load event for late console messages.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise PhasescopeError(f"{path}: no such page")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise PhasescopeError("no Chromium found (install Debian's chromium, or set CHROMIUM)")
    commands_read, commands_write = os.pipe()
    events_read, events_write = os.pipe()
    # the browser reads commands on fd 3 and writes replies on fd 4: its ends are first moved above
    # 100, so that the shell's redirections to 3 and 4 cannot overwrite one of them
    child_ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in (commands_read, events_write)]
    for fd in (commands_read, events_write):
        os.close(fd)
    with tempfile.TemporaryDirectory(prefix="phasescope-chromium-") as profile:
        shell = f'exec "$0" "$@" 3<&{child_ends[0]} 4>&{child_ends[1]} {child_ends[0]}<&- {child_ends[1]}>&-'
        process = subprocess.Popen(["bash", "-c", shell, chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                    "about:blank"], pass_fds=tuple(child_ends),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in child_ends:
            os.close(fd)
        pipe = _Pipe(commands_write, events_read)
        try:
            return _inspect(pipe, path, timeout, settle_seconds)
        finally:
            try:
                pipe.send("Browser.close", timeout=5)
            except PhasescopeError:
                pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            os.close(commands_write)
            os.close(events_read)


def _inspect(pipe: _Pipe, path: Path, timeout: float, settle_seconds: float) -> PageCheck:
    target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        pipe.send(f"{domain}.enable", session=session)
    pipe.events.clear()
    pipe.send("Page.navigate", {"url": path.as_uri()}, session=session)
    pipe.wait_for("Page.loadEventFired", timeout=timeout)
    time.sleep(settle_seconds)
    images = json.loads(pipe.send("Runtime.evaluate", {"expression": _IMAGES_SCRIPT, "returnByValue": True},
                                  session=session)["result"]["value"])
    title = pipe.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                      session=session)["result"]["value"]
    check = PageCheck(images=[{"alt": i["alt"], "complete": i["complete"], "width": i["width"],
                               "height": i["height"]} for i in images], title=title)
    for event in pipe.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            check.console.append(("error" if params.get("type") in ("error", "assert") else params.get("type"), text))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            check.console.append((entry.get("level", "info"), entry.get("text", "")))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            check.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Network.requestWillBeSent":
            check.requests.append(params.get("request", {}).get("url", "")[:200])  # data: URIs are long
    return check
