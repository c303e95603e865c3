"""Real stream servers on loopback, for tests and benchmarks of live sources (Debian packages, see
``.ci/run``): GStreamer's RTSP server (run by the system ``python3``, where ``gi`` lives) and ffmpeg's one-client
HTTP server. Both serve until stopped; stop one and start it again on the same port to test reconnection.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"

_RTSP_SERVER = """
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(sys.argv[2])
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
server.attach(None)
print("ready", flush=True)
GLib.MainLoop().run()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    """A socket listens on ``port`` on this machine (read from /proc/net/tcp, without connecting)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            return True
    return False


def rtsp_available() -> str | None:
    """None when GStreamer's RTSP server can run here, else what is missing."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else "GStreamer's RTSP server (gir1.2-gst-rtsp-server-1.0) is not installed"


def ffmpeg_available() -> str | None:
    return None if shutil.which("ffmpeg") else "ffmpeg is not installed"


class RtspServer:
    """``rtsp://127.0.0.1:PORT/live``: a moving test pattern (``width`` x ``height`` at ``fps``), H.264."""

    def __init__(self, port: int | None = None, width: int = 320, height: int = 240, fps: int = 15) -> None:
        self.port = port or free_port()
        self.launch = (f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
                       f"framerate={fps}/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! "
                       "rtph264pay name=pay0 pt=96 )")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live"

    def start(self) -> RtspServer:
        self.process = subprocess.Popen([SYSTEM_PYTHON, "-c", _RTSP_SERVER, str(self.port), self.launch],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"the RTSP server did not start on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HttpStreamServer:
    """``http://127.0.0.1:PORT/live.ts`` (MPEG-TS) or ``.../live.mjpg`` (MJPEG): ffmpeg plays ``video`` in a loop at
    its own rate to one client."""

    def __init__(self, video: str | Path, port: int | None = None, mjpeg: bool = False) -> None:
        self.video, self.port, self.mjpeg = Path(video), port or free_port(), mjpeg
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/live.{'mjpg' if self.mjpeg else 'ts'}"

    def start(self) -> HttpStreamServer:
        codec = ["-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg"] if self.mjpeg else \
            ["-c:v", "mpeg2video", "-q:v", "5", "-f", "mpegts"]
        self.process = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                                         str(self.video), *codec, "-listen", "1", self.url],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # ready once it listens (a probe connection would be its one client)
            if _listening(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ffmpeg did not start serving on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> HttpStreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
