"""``isseg serve``'s app on Ray Serve: the same endpoints, served by replicas that Ray places and scales.

    python -m isseg.cluster.serving exported/security-0002.xml --replicas 1:4 --port 8000 [--ray ADDRESS]

Each replica builds its own models and app with ``isseg.serve`` (``load_models`` + ``create_app``, the exact
app ``isseg serve`` runs under uvicorn) when Ray starts it, so the models are never pickled and every replica
answers the same KServe v2 / ``/predict`` / ``/metrics`` routes. ``--replicas N`` fixes the count; ``MIN:MAX``
lets Ray Serve's autoscaler add replicas while requests queue up and remove idle ones. Needs ``ray[serve]``
besides the ``serve`` extra.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict
from typing import Any

APP_NAME = "isseg"


def parse_replicas(spec: str) -> dict[str, Any]:
    """``"2"`` -> a fixed count; ``"1:4"`` -> autoscaling bounds; one clear error otherwise."""
    lo, sep, hi = str(spec).partition(":")
    try:
        low, high = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise ValueError(f"--replicas {spec!r}: expected N or MIN:MAX (whole numbers)") from None
    if low < (0 if sep else 1) or high < max(1, low):
        raise ValueError(f"--replicas {spec!r}: expected 1 <= N, or 0 <= MIN <= MAX with MAX >= 1")
    if not sep:
        return {"num_replicas": low}
    return {"autoscaling_config": {"min_replicas": low, "max_replicas": high, "initial_replicas": max(1, low),
                                   "target_ongoing_requests": 2}}


def build_deployment(models: list[str], serve_settings: dict[str, Any], load_kwargs: dict[str, Any],
                     replicas: str = "1", cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0) -> Any:
    """A bound Ray Serve application whose replicas each run ``isseg.serve.create_app(load_models(...))``."""
    from ray import serve

    @serve.ingress()
    class IssegServe:
        """One replica: loads the models, then Ray Serve asks it for its ASGI app."""

        def __init__(self, models: list[str], settings: dict[str, Any], kwargs: dict[str, Any]) -> None:
            from isseg.serve.models import ModelSettings, ServeSettings, load_models

            default = ModelSettings(**settings.pop("default"))
            per_model = settings.pop("models", {})
            self.settings = ServeSettings(default=default, models=per_model, **settings)
            self.models = load_models(models, self.settings, **kwargs)

        def __serve_build_asgi_app__(self) -> Any:
            from isseg.serve.app import create_app

            return create_app(self.models, self.settings)

    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
                               "max_ongoing_requests": max(2, int(serve_settings["default"]["max_queue"])),
                               **parse_replicas(replicas)}
    deployment = serve.deployment(name="isseg-serve", **options)(IssegServe)
    return deployment.bind(list(models), serve_settings, load_kwargs)


def settings_dict(settings: Any) -> dict[str, Any]:
    """``ServeSettings`` as plain data (Ray ships it to the replicas, which rebuild it)."""
    d = asdict(settings)
    d["models"] = {k: dict(v) for k, v in d.get("models", {}).items()}
    return d


def serve_ray(models: list[str], *, address: str | None = "auto", host: str = "127.0.0.1", port: int = 8000,
              replicas: str = "1", cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0,
              threshold: float = 0.5, workers: int = 1, max_queue: int = 8, timeout_s: float = 60.0,
              backend: str | None = None, device: str | None = None, precision: str | None = None,
              num_threads: int = 0, preset: str | None = None, blocking: bool = False) -> str:
    """Deploy the serving app on Ray Serve; -> its base URL. ``blocking`` keeps serving until Ctrl-C."""
    from ray import serve

    from isseg.cluster.pipeline import connect
    from isseg.serve.models import ModelSettings, ServeSettings

    settings = ServeSettings(threshold=threshold, default=ModelSettings(workers, max(max_queue, workers), timeout_s))
    load_kwargs = {"backend": backend, "device": device, "precision": precision, "num_threads": num_threads,
                   "preset": preset}
    parse_replicas(replicas)  # a bad spec fails before Ray starts
    connect(address)
    serve.start(http_options={"host": host, "port": port})
    app = build_deployment(models, settings_dict(settings), load_kwargs, replicas, cpus_per_replica,
                           gpus_per_replica)
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{host}:{port}"
    if blocking:
        print(f"isseg serve --ray: {url} ({replicas} replica(s)); Ctrl-C stops", file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m isseg.cluster.serving", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", metavar="MODEL", help="[NAME=]SOURCE, as isseg serve")
    p.add_argument("--ray", default="auto", metavar="ADDRESS", help="Ray cluster (default: running one, else local)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", default="1", help="N replicas, or MIN:MAX for autoscaling (default 1)")
    p.add_argument("--cpus-per-replica", type=float, default=1.0)
    p.add_argument("--gpus-per-replica", type=float, default=0.0)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=1, help="inferences at once per model in each replica")
    p.add_argument("--max-queue", type=int, default=8)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--backend", choices=("torch", "openvino", "onnx"))
    p.add_argument("--device")
    p.add_argument("--precision")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--preset")
    args = p.parse_args(argv)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    try:
        serve_ray(args.models, address=args.ray, host=args.host, port=args.port, replicas=args.replicas,
                  cpus_per_replica=args.cpus_per_replica, gpus_per_replica=args.gpus_per_replica,
                  threshold=args.threshold, workers=args.workers, max_queue=args.max_queue, timeout_s=args.timeout,
                  backend=args.backend, device=args.device, precision=args.precision, num_threads=args.threads,
                  preset=args.preset, blocking=True)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"isseg serve --ray: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
