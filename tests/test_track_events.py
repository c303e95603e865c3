"""isseg.track events: the JSON Lines log, and a webhook that never blocks, up or down (loopback servers)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from isseg.track import Event, EventLog, WebhookSink, open_event_sink


def events(n: int) -> list[Event]:
    return [Event("cross", "door", i + 1, "person", 0.04 * i, i, direction="in", point=(10.0, 20.5)) for i in range(n)]


class Receiver:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self, port: int = 0, status: int = 200) -> None:
        received: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_event_log_writes_one_json_object_per_line(tmp_path):
    path = tmp_path / "events" / "log.jsonl"
    with EventLog(path) as log:
        log.write(events(2))
        log.write([Event("exit", "bay", 3, "car", 1.5, 37, dwell_s=12.25, reason="left")])
    lines = path.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"kind": "cross", "name": "door", "track_id": 1, "class_name": "person", "timestamp": 0.0, "frame_index": 0,
         "direction": "in", "point": [10.0, 20.5]},
        {"kind": "cross", "name": "door", "track_id": 2, "class_name": "person", "timestamp": 0.04,
         "frame_index": 1, "direction": "in", "point": [10.0, 20.5]},
        {"kind": "exit", "name": "bay", "track_id": 3, "class_name": "car", "timestamp": 1.5, "frame_index": 37,
         "dwell_s": 12.25, "reason": "left"}]
    with EventLog(path) as log:  # appends
        log.write(events(1))
    assert len(path.read_text().splitlines()) == 4
    with pytest.raises(ValueError, match="closed"):
        log.write(events(1))


def test_webhook_up_receives_every_event():
    server = Receiver()
    try:
        sink = open_event_sink(server.url)
        assert isinstance(sink, WebhookSink)
        sink.write(events(20))
        sink.close(timeout=10)
        assert [e["track_id"] for e in server.received] == list(range(1, 21))
        assert sink.sent == 20 and sink.dropped == 0
    finally:
        server.close()


def test_webhook_down_never_blocks_warns_once_and_recovers(caplog):
    port = free_port()  # nothing listens there: connection refused
    sink = WebhookSink(f"http://127.0.0.1:{port}/events", queue_size=50, backoff=0.05, max_backoff=0.2)
    with caplog.at_level(logging.WARNING, logger="isseg.track"):
        start = time.monotonic()
        for _ in range(10):
            sink.write(events(10))
        assert time.monotonic() - start < 0.5  # 100 events queued without waiting for the network
        assert wait_for(lambda: sink.failures >= 4)
        down = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(down) == 1 and "\n" not in down[0].getMessage()
        assert sink.dropped == 50  # the queue holds 50; the oldest were dropped
        server = Receiver(port)  # the receiver comes back on the same port
        try:
            assert wait_for(lambda: len(server.received) >= 50)
            assert any("reachable again" in r.getMessage() for r in caplog.records)
            sink.close(timeout=5)
        finally:
            server.close()
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    assert all(r.exc_info is None for r in caplog.records)  # no tracebacks


def test_webhook_close_does_not_hang_when_down(caplog):
    sink = WebhookSink(f"http://127.0.0.1:{free_port()}/", backoff=0.05)
    sink.write(events(5))
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="isseg.track"):
        sink.close(timeout=0.5)
    assert time.monotonic() - start < 3
    assert any("not delivered" in r.getMessage() for r in caplog.records)


def test_webhook_refusal_drops_the_event_without_retrying():
    server = Receiver(status=400)
    try:
        sink = WebhookSink(server.url)
        sink.write(events(3))
        sink.close(timeout=5)
        assert len(server.received) == 3 and sink.dropped == 3 and sink.failures == 0
    finally:
        server.close()


def test_bad_webhook_url():
    with pytest.raises(ValueError, match="http"):
        WebhookSink("ftp://example/")
