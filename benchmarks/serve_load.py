"""Load test of ``isseg serve``: N concurrent clients for M seconds against the KServe v2 inference endpoint
(``/v2/models/seg/infer``) on 127.0.0.1, compared with ``isseg predict`` on the same images in the same run.

    .venv/bin/python benchmarks/serve_load.py --clients 4 --seconds 60               # seeded random 768x1024 model
    .venv/bin/python benchmarks/serve_load.py --model exported/security-0002.xml --workers 2 --max-queue 16

Reports throughput, p50/p95/p99 latency, errors (by HTTP status; 503s of a full queue are counted apart), and the
server process's peak resident memory (VmHWM). Traffic only goes to the loopback address; the run is bounded by
``--seconds`` and ``--max-requests`` and stops by itself. Clients send the v2 binary-tensor request that tritonclient
sends (one BYTES input: the JPEG file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="IR / ONNX file (default: a seeded random security-0002 export at 768x1024)")
    p.add_argument("--images", default=str(REPO.parent / "shared/datasets/coco-mini/val2017"),
                   help="folder of JPEG images (default coco-mini val2017)")
    p.add_argument("--count", type=int, default=8, help="images used (cycled by the clients)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients")
    p.add_argument("--seconds", type=float, default=60.0, help="duration of the load phase")
    p.add_argument("--max-requests", type=int, default=2000, help="hard bound on requests sent")
    p.add_argument("--workers", type=int, default=1, help="isseg serve --workers")
    p.add_argument("--max-queue", type=int, default=8, help="isseg serve --max-queue")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--json", help="also write the figures to this file")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_model(folder: Path) -> Path:
    """A seeded realistic random-weight security-0002 export (full 768x1024: the real work per image)."""
    from isseg import export
    from isseg.testing.random_weights import realistic_random_model

    return Path(export(realistic_random_model("security-0002", seed=0), folder, "openvino", "fp32"))


def v2_body(data: bytes) -> tuple[bytes, dict[str, str]]:
    """The binary-tensor request tritonclient sends for one BYTES input."""
    blob = struct.pack("<I", len(data)) + data
    head = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(blob)}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + blob, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def peak_rss_mib(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else float("nan")


def rss_mib(pid: int) -> float:
    try:
        m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return float("nan")
    return int(m.group(1)) / 1024 if m else float("nan")


def main(argv: list[str] | None = None) -> int:
    import httpx

    args = parse_args(argv)
    files = sorted(Path(args.images).glob("*.jpg"))[: args.count]
    if not files:
        print(f"serve_load: no .jpg images in {args.images}", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="isseg-serve-load-"))
    t0 = time.perf_counter()
    model = Path(args.model) if args.model else default_model(tmp / "model")
    print(f"model {model} ({'given' if args.model else f'exported in {time.perf_counter() - t0:.0f} s'}); "
          f"{len(files)} images; {os.cpu_count()} CPUs", flush=True)

    # ------------------------------------------------------------------------------------- the server
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "server.log", "w")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "isseg", "serve", f"seg={model}", "--no-contract",
                               "--port", str(port), "--workers", str(args.workers), "--max-queue",
                               str(args.max_queue), "--threshold", str(args.threshold), "--log-level", "warning"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                print(f"serve_load: the server did not start:\n{(tmp / 'server.log').read_text()[-2000:]}")
                return 1
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        bodies = [v2_body(f.read_bytes()) for f in files]
        idle_rss = rss_mib(server.pid)
        with httpx.Client(timeout=120) as c:  # warm-up, one per image
            for body, headers in bodies:
                c.post(f"{url}/v2/models/seg/infer", content=body, headers=headers).raise_for_status()

        latencies: list[float] = []
        codes: dict[int, int] = {}
        lock = threading.Lock()
        sent = [0]
        stop_at = time.monotonic() + args.seconds
        rss_peak_seen = [idle_rss]

        def client(k: int) -> None:
            with httpx.Client(timeout=120) as c:
                i = k
                while time.monotonic() < stop_at:
                    with lock:
                        if sent[0] >= args.max_requests:
                            return
                        sent[0] += 1
                    body, headers = bodies[i % len(bodies)]
                    i += 1
                    t = time.perf_counter()
                    try:
                        status = c.post(f"{url}/v2/models/seg/infer", content=body, headers=headers).status_code
                    except httpx.HTTPError:
                        status = -1
                    dt = time.perf_counter() - t
                    with lock:
                        codes[status] = codes.get(status, 0) + 1
                        if status == 200:
                            latencies.append(dt)
                    if status == 503:
                        time.sleep(0.05)

        halves = [0.0, 0.0]  # peak RSS in the first and the second half of the load: bounded memory stays flat

        def watch() -> None:
            middle = stop_at - args.seconds / 2
            while time.monotonic() < stop_at:
                now = rss_mib(server.pid)
                rss_peak_seen[0] = max(rss_peak_seen[0], now)
                half = 0 if time.monotonic() < middle else 1
                halves[half] = max(halves[half], now)
                time.sleep(0.25)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        watcher = threading.Thread(target=watch, daemon=True)
        t_load = time.perf_counter()
        watcher.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_load
        metrics = httpx.get(f"{url}/metrics").text
        peak = peak_rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
    ok = len(latencies)
    lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    errors = {c: n for c, n in codes.items() if c not in (200, 503)}

    # ---------------------------------------------------------------------------- isseg predict baseline
    t = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "isseg", "predict", *map(str, files), "--model", str(model),
                          "--no-images", "-q", "-t", str(args.threshold), "-o", str(tmp / "predict")],
                         capture_output=True, text=True)
    predict_wall = time.perf_counter() - t
    m = re.search(r"=\s*([\d.]+)\s*images/s", run.stdout + run.stderr)
    predict_ips = float(m.group(1)) if m else len(files) / predict_wall

    result = {
        "clients": args.clients, "seconds": round(wall, 1), "workers": args.workers, "max_queue": args.max_queue,
        "requests_ok": ok, "throughput_img_s": round(ok / wall, 3),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1), "p95": round(float(np.percentile(lat, 95)), 1),
                       "p99": round(float(np.percentile(lat, 99)), 1)},
        "rejected_503": codes.get(503, 0), "errors": errors,
        "server_rss_mib": {"idle": round(idle_rss, 1), "peak_during_load": round(rss_peak_seen[0], 1),
                           "peak_first_half": round(halves[0], 1), "peak_second_half": round(halves[1], 1),
                           "peak_lifetime_vmhwm": round(peak, 1)},
        "isseg_predict_img_s": round(predict_ips, 3), "isseg_predict_rc": run.returncode,
        "serve_vs_predict": round((ok / wall) / predict_ips, 3) if predict_ips else None,
        "queue_depth_metric_present": "isseg_queue_depth" in metrics,
    }
    log.close()
    shutil.rmtree(tmp, ignore_errors=True)  # the export, the logs and the predict output of this run
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not errors and run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
