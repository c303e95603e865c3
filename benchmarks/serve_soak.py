"""Soak test of ``isseg serve``: mixed valid and invalid requests for a long time, on 127.0.0.1 only.

    .venv/bin/python benchmarks/serve_soak.py --minutes 30 --json soak.json          # the documented run
    .venv/bin/python benchmarks/serve_soak.py --minutes 1 --model exported/security-0002.xml

Starts ``isseg serve`` (API keys on: ``$ISSEG_API_KEYS``, a random key) on a free loopback port and drives it with
``--clients`` threads for ``--minutes`` (bounded by ``--max-requests`` too). Each request is drawn from a fixed
mix: valid ones (``/predict`` multipart, v2 binary BYTES to the detections model, v2 binary NHWC image to the
contract model, readiness, metrics with the key) and invalid ones, each with the answer it must get (no key or a
wrong key: 401; a corrupt JPEG, a bad header length, bad JSON, a wrong datatype: 400; an unknown model: 404; a
body over the limit: 413). It reports:

- the server's resident memory (VmRSS) sampled every ``--sample-s`` seconds: the samples, the highest within
  each tenth of the run, the running peak, and the slope after the warm-up (MiB per hour); flat is the goal;
- errors on valid requests (anything but 200; must be 0) and invalid requests answered otherwise than expected;
- p50 / p99 latency of each valid kind in the first and the last fifth of the run, and their drift.

Exit code 0 only when valid requests had no error, invalid ones all got their answer, and the server lived.

Side loads: ``SIDE_LOADS`` runs next to the requests for the whole soak, each a callable
``(url, key, stop_event, sample_s) -> dict``. ``--stream`` adds a stream tracked by the server at the same time
(its live view, ``isseg serve --stream``): a URL, or nothing for a synthetic scene that this script serves with
ffmpeg on loopback (:class:`isseg.testing.streams.HttpStreamServer`). The ``stream`` side load polls the stream's status
every ``--sample-s`` seconds (frames, lag, tracks) and reads the newest MJPEG frame through a view token each time;
it reports the frames tracked, the frames per second, the lag (capture to served) p50 / p99 / max in the first and
last fifth, the MJPEG frames read and decoded, and any status or MJPEG errors (which fail the run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import REPO, free_port, rss_mib, v2_body  # noqa: E402

SIDE_LOADS: dict[str, Callable[[str, str, threading.Event, float], dict[str, Any]]] = {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="duration of the soak (default 30)")
    p.add_argument("--max-requests", type=int, default=1_000_000, help="hard bound on requests sent")
    p.add_argument("--clients", type=int, default=3, help="concurrent clients (default 3)")
    p.add_argument("--invalid-share", type=float, default=0.3, help="share of invalid requests (default 0.3)")
    p.add_argument("--sample-s", type=float, default=10.0, help="seconds between memory samples")
    p.add_argument("--model", help="IR / ONNX file (default: a seeded random security-0002 export at --size)")
    p.add_argument("--size", default="320x416", help="HxW of the default model (default 320x416; 768x1024: full)")
    p.add_argument("--images", default=str(REPO.parent / "shared/datasets/coco-mini/val2017"))
    p.add_argument("--count", type=int, default=8, help="images cycled by the clients")
    p.add_argument("--workers", type=int, default=1, help="isseg serve --workers")
    p.add_argument("--seed", type=int, default=0, help="seed of the request mix")
    p.add_argument("--stream", nargs="?", const="synth", metavar="URL",
                   help="also track a stream in the server (no URL: a synthetic scene served here by ffmpeg)")
    p.add_argument("--json", help="also write the figures to this file")
    return p.parse_args(argv)


def default_model(folder: Path, size: str) -> Path:
    from isseg import export
    from isseg.deploy.export import at_size
    from isseg.testing.random_weights import realistic_random_model

    h, w = (int(v) for v in size.lower().split("x"))
    model = at_size(realistic_random_model("security-0002", seed=0), (h, w))
    return Path(export(model, folder, "openvino", "fp32"))


# ------------------------------------------------------------------------------------------ the request mix
@dataclass
class Kind:
    """One kind of request: how to send it, whether it is valid, the status it must get, and its weight."""

    name: str
    valid: bool
    expect: int
    weight: float
    send: Callable[[Any, str, str], Any]


def request_kinds(jpegs: list[bytes], images: list[np.ndarray], body_limit: int) -> list[Kind]:
    """The valid and invalid requests of the soak (``send(client, url, key) -> httpx.Response``)."""
    bodies = [v2_body(j) for j in jpegs]

    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def pick(items: list) -> Any:
        return items[random.randrange(len(items))]

    def predict(c: Any, url: str, key: str) -> Any:
        return c.post(f"{url}/predict", headers=auth(key), files={"image": ("photo.jpg", pick(jpegs))})

    def v2_bytes(c: Any, url: str, key: str) -> Any:
        body, headers = pick(bodies)
        return c.post(f"{url}/v2/models/seg-detections/infer", content=body, headers={**headers, **auth(key)})

    def v2_image(c: Any, url: str, key: str) -> Any:  # Model API's form: the BGR image [1, h, w, 3] to the contract
        img = pick(images)
        head = json.dumps({"inputs": [{"name": "image", "shape": [1, *img.shape], "datatype": "UINT8",
                                       "parameters": {"binary_data_size": img.nbytes}}],
                           "outputs": [{"name": n, "parameters": {"binary_data": True}}
                                       for n in ("labels", "boxes", "masks")]}).encode()
        return c.post(f"{url}/v2/models/seg/infer", content=head + img.tobytes(),
                      headers={"Inference-Header-Content-Length": str(len(head)), **auth(key)})

    def get(path: str, with_key: bool = True) -> Callable[[Any, str, str], Any]:
        return lambda c, url, key: c.get(f"{url}{path}", headers=auth(key) if with_key else {})

    def no_key(c: Any, url: str, key: str) -> Any:
        body, headers = pick(bodies)
        return c.post(f"{url}/v2/models/seg-detections/infer", content=body, headers=headers)

    def wrong_key(c: Any, url: str, key: str) -> Any:
        return c.post(f"{url}/predict", headers=auth("wrong" + key[5:]), files={"image": ("a.jpg", jpegs[0])})

    def corrupt(c: Any, url: str, key: str) -> Any:
        data = pick(jpegs)
        return c.post(f"{url}/predict", headers=auth(key), files={"image": ("half.jpg", data[:len(data) // 2])})

    def bad_length(c: Any, url: str, key: str) -> Any:
        body, headers = pick(bodies)
        return c.post(f"{url}/v2/models/seg-detections/infer", content=body,
                      headers={**headers, "Inference-Header-Content-Length": str(len(body) + 7), **auth(key)})

    def bad_json(c: Any, url: str, key: str) -> Any:
        return c.post(f"{url}/v2/models/seg/infer", content=b'{"inputs": [', headers=auth(key))

    def wrong_datatype(c: Any, url: str, key: str) -> Any:
        doc = {"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
        return c.post(f"{url}/v2/models/seg-detections/infer", json=doc, headers=auth(key))

    def unknown_model(c: Any, url: str, key: str) -> Any:
        return c.get(f"{url}/v2/models/nope-{random.randrange(10**6)}", headers=auth(key))

    def too_big(c: Any, url: str, key: str) -> Any:
        return c.post(f"{url}/predict", headers={**auth(key), "Content-Type": "image/jpeg"},
                      content=bytes(body_limit + 1024))

    return [Kind("predict", True, 200, 3, predict), Kind("v2_detections", True, 200, 3, v2_bytes),
            Kind("v2_contract_image", True, 200, 2, v2_image),
            Kind("ready", True, 200, 1, get("/v2/health/ready", with_key=False)),
            Kind("metrics", True, 200, 0.5, get("/metrics")),
            Kind("no_key", False, 401, 1, no_key), Kind("wrong_key", False, 401, 1, wrong_key),
            Kind("corrupt_jpeg", False, 400, 1, corrupt), Kind("bad_header_length", False, 400, 1, bad_length),
            Kind("bad_json", False, 400, 1, bad_json), Kind("wrong_datatype", False, 400, 1, wrong_datatype),
            Kind("unknown_model", False, 404, 1, unknown_model), Kind("body_too_big", False, 413, 0.5, too_big)]


# ----------------------------------------------------------------------------------------------- the run
@dataclass
class Log:
    """What the clients and the sampler record (one lock for all)."""

    records: list[tuple[float, str, int, float]] = field(default_factory=list)  # (t, kind, status, seconds)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (t, MiB)
    side: dict[str, dict[str, Any]] = field(default_factory=dict)  # what each side load reported
    lock: threading.Lock = field(default_factory=threading.Lock)


def drive(url: str, key: str, kinds: list[Kind], args: argparse.Namespace, pid: int, log: Log) -> float:
    """Run the clients and the memory sampler for the duration; -> the run's seconds."""
    import httpx

    valid = [k for k in kinds if k.valid]
    invalid = [k for k in kinds if not k.valid]
    t0 = time.monotonic()
    stop_at = t0 + args.minutes * 60
    stop = threading.Event()
    sent = [0]

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=300) as c:
            while time.monotonic() < stop_at and not stop.is_set():
                with log.lock:
                    if sent[0] >= args.max_requests:
                        return
                    sent[0] += 1
                group = invalid if rng.random() < args.invalid_share else valid
                kind = rng.choices(group, weights=[k.weight for k in group])[0]
                t = time.perf_counter()
                try:
                    status = kind.send(c, url, key).status_code
                except httpx.HTTPError:
                    status = -1
                with log.lock:
                    log.records.append((time.monotonic() - t0, kind.name, status, time.perf_counter() - t))

    def sampler() -> None:
        while not stop.wait(args.sample_s):
            log.rss.append((time.monotonic() - t0, rss_mib(pid)))

    log.rss.append((0.0, rss_mib(pid)))
    threads = [threading.Thread(target=client, args=(args.seed * 1000 + i,)) for i in range(args.clients)]
    watcher = threading.Thread(target=sampler, daemon=True)
    def side_load(name: str) -> None:
        log.side[name] = SIDE_LOADS[name](url, key, stop, args.sample_s)

    side = {name: threading.Thread(target=side_load, args=(name,), daemon=True)
            for name in (["stream"] if args.stream else [])}
    for t in [watcher, *side.values(), *threads]:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in side.values():
        t.join(60)
    log.rss.append((time.monotonic() - t0, rss_mib(pid)))
    return time.monotonic() - t0


def summarize(log: Log, kinds: list[Kind], seconds: float) -> dict[str, Any]:
    """Errors, latency drift (first vs last fifth) and memory over time of a finished run."""
    by = {k.name: k for k in kinds}
    counts: dict[str, dict[str, int]] = {}
    valid_errors = unexpected = 0
    for _, name, status, _ in log.records:
        c = counts.setdefault(name, {})
        c[str(status)] = c.get(str(status), 0) + 1
        if status != by[name].expect:
            if by[name].valid:
                valid_errors += 1
            else:
                unexpected += 1
    fifth = seconds / 5
    latency: dict[str, Any] = {}
    for k in kinds:
        if not k.valid:
            continue
        parts = [[dt * 1000 for t, n, s, dt in log.records if n == k.name and s == 200 and lo <= t < hi]
                 for lo, hi in ((0, fifth), (seconds - fifth, seconds + 1))]
        if all(parts):
            first, last = ([round(float(np.percentile(p, q)), 1) for q in (50, 99)] for p in parts)
            latency[k.name] = {"first_fifth_p50_p99_ms": first, "last_fifth_p50_p99_ms": last,
                               "n": list(map(len, parts)),
                               "p50_drift_pct": round(100 * (last[0] / first[0] - 1), 1),
                               "p99_drift_pct": round(100 * (last[1] / first[1] - 1), 1)}
    rss = np.array(log.rss)
    warm = rss[rss[:, 0] >= min(seconds * 0.1, 120)] if len(rss) > 3 else rss
    slope = float(np.polyfit(warm[:, 0], warm[:, 1], 1)[0]) * 3600 if len(warm) >= 3 else float("nan")
    edges = np.linspace(0, seconds, 11)
    tenths = [round(float(rss[(rss[:, 0] >= lo) & (rss[:, 0] <= hi)][:, 1].max()), 1)
              for lo, hi in zip(edges[:-1], edges[1:]) if ((rss[:, 0] >= lo) & (rss[:, 0] <= hi)).any()]
    running_peak = [round(float(rss[rss[:, 0] <= hi][:, 1].max()), 1) for hi in edges[1:]]
    return {"seconds": round(seconds, 1), "requests": len(log.records),
            "valid_requests": sum(1 for r in log.records if by[r[1]].valid), "valid_errors": valid_errors,
            "invalid_requests": sum(1 for r in log.records if not by[r[1]].valid),
            "invalid_unexpected_answers": unexpected, "answers": counts, "latency": latency,
            "rss_mib": {"start": round(float(rss[0, 1]), 1), "after_warmup": round(float(warm[0, 1]), 1),
                        "end": round(float(rss[-1, 1]), 1), "max": round(float(rss[:, 1].max()), 1),
                        "max_within_each_tenth": tenths, "running_peak_at_each_tenth": running_peak,
                        "slope_after_warmup_mib_per_hour": round(slope, 1), "samples": len(rss),
                        "series_s_mib": [[round(float(t), 1), round(float(m), 1)] for t, m in rss]}}


def start_server(model: Path, port: int, key: str, args: argparse.Namespace, log: Path,
                 extra: list[str] | None = None) -> subprocess.Popen:
    import httpx

    out = open(log, "w")  # noqa: SIM115 - the server writes to it during the run
    proc = subprocess.Popen([sys.executable, "-m", "isseg", "serve", f"seg={model}", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(args.workers), "--max-queue",
                             str(max(8, 2 * args.clients)), "--max-body-mb", "2", "--log-level", "warning",
                             *(extra or [])],
                            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "ISSEG_API_KEYS": key})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the server did not start:\n{log.read_text()[-2000:]}")


# ------------------------------------------------------------------------------------ the stream side load
STREAM_NAME = "soak"


def start_stream(url: str, folder: Path) -> Any:
    """The synthetic scene served by ffmpeg on loopback (``url == "synth"``), else None (a given URL)."""
    if url != "synth":
        return None
    import cv2

    from isseg.testing.streams import HttpStreamServer

    blocks = np.random.default_rng(0).integers(60, 200, (60, 80, 3), dtype=np.uint8)
    background = cv2.resize(blocks, (320, 240), interpolation=cv2.INTER_NEAREST)
    path = folder / "scene.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(100):  # two things moving across, looped by ffmpeg
        image = background.copy()
        cv2.circle(image, (30 + 2 * i if i < 50 else 230 - 2 * (i - 50), 120), 35, (230, 200, 180), -1)
        cv2.rectangle(image, (200, 20 + i), (270, 90 + i), (40, 180, 60), -1)
        writer.write(image)
    writer.release()
    return HttpStreamServer(path, mjpeg=True).start()


def stream_load(url: str, key: str, stop: threading.Event, sample_s: float = 10.0) -> dict[str, Any]:
    """Watch the tracked stream for the whole soak: status samples and a few MJPEG frames each time."""
    import cv2
    import httpx

    auth = {"Authorization": f"Bearer {key}"}
    samples: list[tuple[float, int, float | None, int]] = []  # (t, frames, lag_s, tracks)
    errors: list[str] = []
    jpegs = 0
    t0 = time.monotonic()
    base = f"{url}/v2/streams/{STREAM_NAME}"
    with httpx.Client(timeout=120) as c:
        while not stop.wait(sample_s):
            try:
                st = c.get(f"{base}/status", headers=auth).json()
                samples.append((time.monotonic() - t0, st["frames"], st["lag_s"], st["tracks"]))
                token = c.post(f"{base}/token", headers=auth).json()["token"]
                with c.stream("GET", f"{base}/mjpeg", params={"token": token}) as resp:
                    buf = b""
                    for chunk in resp.iter_bytes():
                        buf += chunk
                        if b"\xff\xd9" in buf:  # the newest frame, whole
                            break
                for part in buf.split(b"\r\n\r\n")[1:2]:  # a JPEG, then maybe the next part's head
                    data = part[:part.find(b"\xff\xd9") + 2]
                    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                    jpegs += image is not None
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                errors.append(f"{time.monotonic() - t0:.0f} s: {type(exc).__name__}: {exc}")
    return summarize_stream(samples, jpegs, errors)


def summarize_stream(samples: list[tuple[float, int, float | None, int]], jpegs: int, errors: list[str]
                     ) -> dict[str, Any]:
    if len(samples) < 2:
        return {"samples": len(samples), "errors": errors or ["fewer than 2 status samples"]}
    span = samples[-1][0] - samples[0][0]
    fifth = max(1, len(samples) // 5)

    def lag(part: list) -> list[float] | None:
        values = [s[2] for s in part if s[2] is not None]
        return [round(float(np.percentile(values, q)), 2) for q in (50, 99)] + [round(max(values), 2)] \
            if values else None

    return {"samples": len(samples), "frames": samples[-1][1],
            "fps": round((samples[-1][1] - samples[0][1]) / span, 3) if span > 0 else None,
            "lag_s_first_fifth_p50_p99_max": lag(samples[:fifth]),
            "lag_s_last_fifth_p50_p99_max": lag(samples[-fifth:]),
            "tracks_max": max(s[3] for s in samples), "mjpeg_frames_decoded": jpegs, "errors": errors}


SIDE_LOADS["stream"] = stream_load


def main(argv: list[str] | None = None) -> int:
    import cv2

    args = parse_args(argv)
    random.seed(args.seed)
    files = sorted(Path(args.images).glob("*.jpg"))[: args.count]
    if not files:
        print(f"serve_soak: no .jpg images in {args.images}", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="isseg-serve-soak-"))
    try:
        model = Path(args.model) if args.model else default_model(tmp / "model", args.size)
        jpegs = [f.read_bytes() for f in files]
        images = [cv2.resize(cv2.imread(str(f)), (320, 240)) for f in files]
        key = secrets.token_urlsafe(24)
        port = free_port()
        feed = start_stream(args.stream, tmp) if args.stream else None
        extra = ["--stream", f"{STREAM_NAME}={feed.url if feed else args.stream}"] if args.stream else []
        server = start_server(model, port, key, args, tmp / "server.log", extra)
        try:
            kinds = request_kinds(jpegs, images, 2 * 1024 * 1024)
            print(f"serve_soak: {args.minutes:g} min, {args.clients} clients, model {model.name}, {os.cpu_count()} "
                  f"CPUs, server pid {server.pid} on 127.0.0.1:{port}", file=sys.stderr, flush=True)
            log = Log()
            seconds = drive(f"http://127.0.0.1:{port}", key, kinds, args, server.pid, log)
            alive = server.poll() is None
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(120)
            except subprocess.TimeoutExpired:
                server.kill()
            if feed is not None:
                feed.stop()
        result = {"minutes": args.minutes, "clients": args.clients, "workers": args.workers,
                  "model": str(model if args.model else f"seeded random security-0002 at {args.size}"),
                  "cpus": os.cpu_count(), **summarize(log, kinds, seconds), "side_loads": log.side,
                  "server_alive_at_end": alive,
                  "server_exit_code": server.returncode}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    ok = result["valid_errors"] == 0 and result["invalid_unexpected_answers"] == 0 and alive
    ok = ok and all(not side.get("errors") for side in log.side.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
