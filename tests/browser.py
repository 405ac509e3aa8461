"""A headless Chromium driven over the DevTools protocol, for the browser test and the README screenshots.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol commands on fd 3 and writes replies
and events on fd 4, each a JSON message ending in NUL, so no websocket client and no port are needed. A page
is opened with :meth:`Browser.open`, which navigates, waits for the load event and then polls a JavaScript
condition (single-page apps such as optuna-dashboard render after load), and returns the page's text, the
results of extra expressions, the JavaScript errors seen (uncaught exceptions, ``console.error`` and error
entries in the browser log) and optionally a PNG screenshot. Every wait has a deadline, and the process is
always killed on close.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"

# Headless flags for a closed network (developers' guide): no sandbox in containers, no GPU, and nothing that
# phones home (QUIC, background networking, component updates, sync, first-run pages).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]


class BrowserError(RuntimeError):
    """Chromium did not start, did not answer in time, or answered a command with an error."""


@dataclass
class Page:
    url: str
    text: str  # document.body.innerText once the condition held
    values: dict[str, Any]  # results of the extra expressions, by name
    errors: list[str]  # JavaScript errors: uncaught exceptions, console.error, browser log errors
    screenshot: bytes | None = None
    events: list[dict] = field(default_factory=list, repr=False)


def _error_text(event: dict) -> str | None:
    """One line for an event that reports a JavaScript error, else None."""
    method, p = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        d = p.get("exceptionDetails", {})
        desc = d.get("exception", {}).get("description") or d.get("text", "exception")
        return f"uncaught: {desc.splitlines()[0]} ({d.get('url', '')}:{d.get('lineNumber', '?')})"
    if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
        return f"console.{p['type']}: {args}"
    if method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
        e = p["entry"]
        return f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}".strip()
    return None


class Browser:
    """``with Browser() as b: page = b.open(url, until="...")`` — one headless Chromium, one tab per open()."""

    def __init__(self, chromium: str = CHROMIUM, width: int = 1280, height: int = 900, timeout: float = 60.0):
        if not (Path(chromium).is_file() or shutil.which(chromium)):
            raise BrowserError(f"chromium not found at {chromium!r}; install Debian's chromium package")
        self.width, self.height, self.timeout = width, height, timeout
        self._profile = tempfile.mkdtemp(prefix="hpsearch-chromium-")
        cmd_r, cmd_w = os.pipe()  # we write commands -> chromium reads fd 3
        ev_r, ev_w = os.pipe()  # chromium writes fd 4 -> we read

        def child_fds() -> None:  # in the child, before exec: put the pipe ends on fds 3 and 4
            a, b = os.dup(cmd_r), os.dup(ev_w)  # fresh numbers, so the dup2s below cannot clobber each other
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as chromium; closed in close())
        self._proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, close_fds=False,
            preexec_fn=child_fds, start_new_session=True)
        os.close(cmd_r)
        os.close(ev_w)
        self._out = os.fdopen(cmd_w, "wb", buffering=0)
        self._in = ev_r
        self._messages: queue.Queue[dict | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 0
        self._events: list[dict] = []
        try:
            self.call("Browser.getVersion")
        except BaseException:
            self.close()
            raise

    # -- protocol ---------------------------------------------------------------------------------------------

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._in, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._messages.put(None)
                return
            buf += chunk
            *complete, buf = buf.split(b"\0")
            for raw in complete:
                self._messages.put(json.loads(raw))

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Sends one command and returns its result; events that arrive meanwhile are kept for the caller."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            self._out.write(json.dumps(msg).encode() + b"\0")
        except OSError as e:
            raise BrowserError(f"chromium is gone ({e}); its stderr: {self.stderr_tail()}") from None
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._get(deadline, f"{method} got no answer")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error'].get('message')}")
                return reply.get("result", {})
            self._events.append(reply)

    def _get(self, deadline: float, what: str) -> dict:
        try:
            msg = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise BrowserError(f"{what} within the time limit") from None
        if msg is None:
            raise BrowserError(f"chromium closed its pipe ({what}); its stderr: {self.stderr_tail()}")
        return msg

    def _drain(self, seconds: float) -> None:
        """Collects events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self._events.append(self._get(deadline, "events"))
            except BrowserError as e:
                if "time limit" in str(e):
                    return
                raise

    def stderr_tail(self, n: int = 2000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-n:]

    # -- pages ------------------------------------------------------------------------------------------------

    def open(self, url: str, until: str = "true", values: dict[str, str] | None = None, wait: float = 30.0,
             settle: float = 1.0, screenshot: bool = True, full_page: bool = False, max_height: int = 6000,
             size: tuple[int, int] | None = None) -> Page:
        """Opens ``url`` in a new tab (viewport ``size`` in CSS px, default the browser's), waits for the load
        event, then until the JavaScript expression ``until`` is truthy (BrowserError after ``wait`` seconds),
        then ``settle`` more seconds for drawing; returns the page's text, ``values`` (name -> expression)
        evaluated, the JavaScript errors and a screenshot (the viewport, or the whole page up to ``max_height``
        px with ``full_page``)."""
        width, height = size or (self.width, self.height)
        target = self.call("Target.createTarget", {"url": "about:blank", "newWindow": False})["targetId"]
        sid = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            start = len(self._events)
            for domain in ("Runtime", "Log", "Page"):
                self.call(f"{domain}.enable", session=sid)
            self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                             "deviceScaleFactor": 1, "mobile": False}, session=sid)
            nav = self.call("Page.navigate", {"url": url}, session=sid)
            if nav.get("errorText"):
                raise BrowserError(f"navigating to {url} failed: {nav['errorText']}")
            deadline = time.monotonic() + wait
            while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == sid
                          for e in self._events[start:]):
                self._events.append(self._get(deadline, f"{url} did not finish loading"))
            while not self._eval(sid, f"Boolean({until})"):
                if time.monotonic() > deadline:
                    raise BrowserError(f"{url}: the condition {until!r} did not hold within {wait:g} s; the page "
                                       f"shows: {self._eval(sid, 'document.body.innerText')[:300]!r}")
                self._drain(0.3)
            self._drain(settle)
            text = self._eval(sid, "document.body.innerText")
            got = {name: self._eval(sid, expr) for name, expr in (values or {}).items()}
            shot = self._screenshot(sid, width, full_page, max_height) if screenshot else None
            events = [e for e in self._events[start:] if e.get("sessionId") == sid]
            errors = [line for e in events if (line := _error_text(e))]
            return Page(url=url, text=text, values=got, errors=errors, screenshot=shot, events=events)
        finally:
            self.call("Target.closeTarget", {"targetId": target})

    def _eval(self, sid: str, expr: str) -> Any:
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=sid)
        if "exceptionDetails" in r:
            raise BrowserError(f"evaluating {expr!r} threw: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def _screenshot(self, sid: str, width: int, full_page: bool, max_height: int) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics", session=sid)["cssContentSize"]
            params |= {"captureBeyondViewport": True,
                       "clip": {"x": 0, "y": 0, "width": width, "height": min(size["height"], max_height),
                                "scale": 1}}
        return base64.b64decode(self.call("Page.captureScreenshot", params, session=sid)["data"])

    # -- lifetime ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._out.write(json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        with contextlib.suppress(ProcessLookupError):  # its own session: also ends any helper left behind
            os.killpg(self._proc.pid, 9)
        self._proc.wait(timeout=10)
        for f in (self._out, self._stderr):
            f.close()
        with contextlib.suppress(OSError):
            os.close(self._in)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------------------
# A running `hpsearch dashboard`, for the tests and scripts/screenshots.py
# ------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dashboard:
    base: str  # http://127.0.0.1:PORT
    studies: list[dict]  # /api/studies' study_summaries once the server answered
    proc: subprocess.Popen
    log: Path  # the server's stderr

    def study_id(self, name: str) -> int:
        return next(s["study_id"] for s in self.studies if s["study_name"] == name)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_dashboard(storage: str, artifacts: str | Path | None, cwd: Path, *args: str, wait: float = 60.0,
                      hpsearch: tuple[str, ...] = (sys.executable, "-m", "hpsearch.cli")):
    """Starts ``hpsearch dashboard`` on a free 127.0.0.1 port, waits until its API answers and stops it with
    SIGTERM afterwards (background processes inherit SIGINT ignored). ``hpsearch``: the command to run (another
    installation's console script, say)."""
    port = free_port()
    cmd = [*map(str, hpsearch), "dashboard", "--storage", storage, "--port", str(port), *args]
    if artifacts is not None:
        cmd += ["--artifacts", str(artifacts)]
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as err:
        log = Path(err.name)
        proc = subprocess.Popen(cmd, cwd=cwd, env=os.environ | {"PYTHONWARNINGS": "ignore"}, stdout=subprocess.DEVNULL,
                                stderr=err, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + wait
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=2) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BrowserError(f"the dashboard did not answer on {base}: {log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield Dashboard(base, studies, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
