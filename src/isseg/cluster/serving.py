"""``isseg serve``'s app on Ray Serve: the same endpoints, served by replicas that Ray places and scales.

    isseg serve exported/security-0002.xml --ray [ADDRESS] --replicas 1:4 --port 8000

Each replica builds its own models and app with ``isseg.serve`` (``load_models`` + ``create_app``, the exact
app ``isseg serve`` runs under uvicorn) when Ray starts it, so the models are never pickled and every replica
answers the same KServe v2 / ``/predict`` / ``/metrics`` routes. ``--replicas N`` fixes the count; ``MIN:MAX``
lets Ray Serve's autoscaler add replicas while requests queue up and remove idle ones. Needs ``ray[serve]``
besides the ``serve`` extra.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
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
            from isseg.serve.settings import ModelSettings, ServeSettings
            from isseg.serve.specs import load_models

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


def serve_ray(models: list[str], settings: Any = None, load_kwargs: dict[str, Any] | None = None, *,
              address: str | None = "auto", host: str = "127.0.0.1", port: int = 8000, replicas: str = "1",
              cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0, blocking: bool = False) -> str:
    """Deploy the serving app on Ray Serve; -> its base URL. ``settings``: an ``isseg.serve.ServeSettings``
    (default: ``isseg serve``'s defaults); ``load_kwargs``: ``isseg.serve.specs.load_models``'s keyword
    arguments (backend, device, precision, num_threads, preset, contract). ``blocking`` serves until Ctrl-C
    or SIGTERM, then shuts the deployment down."""
    from isseg.cluster.pipeline import connect
    from isseg.cluster.quiet import quiet_ray

    try:
        from ray import serve
    except ImportError:
        raise RuntimeError("--ray needs Ray Serve: pip install 'isseg[ray]'") from None
    from isseg.serve.settings import ServeSettings
    from isseg.serve.specs import plan_models

    settings = settings or ServeSettings()
    load_kwargs = dict(load_kwargs or {})
    parse_replicas(replicas)  # a bad spec or a missing file fails before Ray starts
    plan_models(models, load_kwargs.get("contract", True))
    # the command keeps Ray's lines that mean nothing to the user out (isseg.cluster.quiet); a Python caller
    # gets the URL back while serving goes on, and Ray's output as it is
    with quiet_ray() if blocking else contextlib.nullcontext():
        connect(address)
        serve.start(http_options={"host": host, "port": port})
        app = build_deployment(models, settings_dict(settings), load_kwargs, replicas, cpus_per_replica,
                               gpus_per_replica)
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        url = f"http://{host}:{port}"
        if blocking:
            print(f"isseg serve --ray: {url} ({replicas} replica(s)); Ctrl-C stops", file=sys.stderr)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                stop.wait()
            finally:  # SIGTERM or Ctrl-C: take the deployment down, then say so
                serve.shutdown()
                print("isseg serve --ray: stopped", file=sys.stderr)
    return url

