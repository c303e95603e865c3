"""Events of the analytics (enter, exit, cross, dwell) and where they go: a JSON Lines file, a webhook.

:class:`EventLog` appends one JSON object per line and flushes after each batch, so a killed process
loses at most the batch being written, never a half-written earlier line. :class:`WebhookSink` POSTs each
event as JSON from a background thread: ``write`` only puts events on a bounded queue and never waits;
when the receiver is down the sink says so once (one warning line), retries the same event with
exponential back-off, drops the oldest queued events if the queue overflows, and says once more when the
receiver is back and how many events were dropped. Standard library only (urllib).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger("isseg.track")

EVENT_KINDS = ("enter", "exit", "cross", "dwell")


@dataclass(frozen=True)
class Event:
    """One analytics event.

    ``kind``: "enter" / "exit" (a zone), "cross" (a line), "dwell" (in a zone for longer than its
    ``max_dwell_s``); ``name``: the zone or line; ``timestamp`` (seconds) and ``frame_index``: the frame's,
    as given by the caller; ``direction``: "in" / "out" for a crossing; ``dwell_s``: the time inside, for
    exit and dwell; ``reason``: why an exit happened ("left", "lost": missing for longer than the
    retention, "end": the stream ended); ``point``: the anchor point (x, y) in pixels; ``source``: the
    stream's name, when the caller has several.
    """

    kind: str
    name: str
    track_id: int
    class_name: str
    timestamp: float
    frame_index: int
    direction: str = ""
    dwell_s: float | None = None
    reason: str = ""
    point: tuple[float, float] | None = None
    source: str = ""

    def to_dict(self) -> dict:
        """A JSON-ready dict without the empty optional fields."""
        d = {k: v for k, v in asdict(self).items() if v not in ("", None)}
        if self.point is not None:
            d["point"] = [round(float(self.point[0]), 1), round(float(self.point[1]), 1)]
        if self.dwell_s is not None:
            d["dwell_s"] = round(float(self.dwell_s), 3)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


class EventLog:
    """Appends events to a JSON Lines file (one event per line), flushed after every ``write``."""

    def __init__(self, path: str | os.PathLike, append: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file: IO[str] | None = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise OSError(f"{self.path}: cannot write events: {exc.strerror or exc}") from None

    def write(self, events: Iterable[Event]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: the event log is closed")
        text = "".join(e.to_json() + "\n" for e in events)
        if text:
            self._file.write(text)
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WebhookSink:
    """POSTs each event (``Content-Type: application/json``, the body is :meth:`Event.to_dict`) to ``url``.

    ``queue_size``: events held while the receiver is slow or down (the oldest are dropped beyond it);
    ``timeout``: seconds per request; ``backoff`` .. ``max_backoff``: the wait before each retry doubles
    from the first to the second. A 4xx answer (other than 408 and 429) drops the event: sending it again
    would not help. ``sent``, ``dropped`` and ``failures`` count what happened.
    """

    def __init__(self, url: str, queue_size: int = 1000, timeout: float = 2.0, backoff: float = 0.5,
                 max_backoff: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook {url!r}: expected an http:// or https:// URL")
        self.url, self.timeout, self.backoff, self.max_backoff = url, timeout, backoff, max_backoff
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.sent = self.dropped = self.failures = 0
        self._down = False
        self._thread = threading.Thread(target=self._run, name="isseg-webhook", daemon=True)
        self._thread.start()

    def write(self, events: Iterable[Event]) -> None:
        """Queue events for sending; never blocks (the oldest queued event is dropped when full)."""
        for e in events:
            while True:
                try:
                    self._queue.put_nowait(e)
                    break
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        with self._lock:
                            self.dropped += 1
                    except queue.Empty:
                        pass

    def _post(self, event: Event) -> str | None:
        """Send one event: None when done (sent, or dropped as unsendable), else why it must be retried."""
        req = urllib.request.Request(self.url, data=event.to_json().encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
            with self._lock:
                self.sent += 1
            return None
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                log.warning("webhook %s refused an event (HTTP %d %s); it is dropped", self.url, exc.code,
                            exc.reason)
                with self._lock:
                    self.dropped += 1
                return None
            return f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return str(getattr(exc, "reason", None) or exc)

    def _run(self) -> None:
        while not self._stop.is_set() or not self._queue.empty():
            try:
                event = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            wait = self.backoff
            while True:
                problem = self._post(event)
                if problem is None:
                    if self._down:
                        self._down = False
                        log.warning("webhook %s is reachable again (%d events dropped so far)", self.url,
                                    self.dropped)
                    break
                with self._lock:
                    self.failures += 1
                if not self._down:
                    self._down = True
                    log.warning("webhook %s unreachable (%s); events are kept (up to %d) and retried with "
                                "back-off", self.url, problem, self._queue.maxsize)
                if self._stop.wait(wait):
                    with self._lock:
                        self.dropped += 1 + self._queue.qsize()
                    return
                wait = min(wait * 2, self.max_backoff)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued for up to ``timeout`` seconds, then stop; warn if events were left unsent."""
        deadline = threading.Event()
        waited = 0.0
        while not self._queue.empty() and not self._down and waited < timeout:
            deadline.wait(0.05)
            waited += 0.05
        self._stop.set()
        self._thread.join(max(0.1, timeout - waited))
        if self.dropped:
            log.warning("webhook %s: %d events were not delivered", self.url, self.dropped)


def open_event_sink(target: str) -> EventLog | WebhookSink:
    """An http(s) URL gives a :class:`WebhookSink`, anything else an :class:`EventLog` file path."""
    if target.startswith(("http://", "https://")):
        return WebhookSink(target)
    return EventLog(target)
