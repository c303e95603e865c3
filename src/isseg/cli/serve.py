"""``isseg serve MODEL...``: serve models over HTTP (KServe v2 / OpenVINO Model Server protocol, ``/predict``,
a page at ``/``, Prometheus ``/metrics``).

    isseg serve exported/security-0002.xml                       # contract model + security-0002-detections
    isseg serve seg=exported/security-0002.xml torchvision-v2-coco --port 9000
    isseg serve model.xml --workers 2 --max-queue 16 --set model-detections.timeout_s=5
    isseg serve model.xml --ray --replicas 1:4                   # the same app on Ray Serve replicas
    isseg serve model.xml --tile 768                             # detections of 4K images by tiles
    ISSEG_API_KEYS=... isseg serve model.xml --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem
    isseg serve model.xml --stream cam=rtsp://10.0.0.5/live --zones zones.yaml --privacy person   # live view

Every option is checked, and the port bound, before any model loads: a bad one is one ``isseg serve: error:``
line. Needs ``pip install "isseg[serve]"`` (and ``"isseg[ray]"`` for ``--ray``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from isseg.cli.serve_live import add_live_arguments, stream_specs
from isseg.cli.tiling_args import add_tiling_arguments, describe_tiling, tiling_from_args

_FIELDS = {"workers": int, "max_queue": int, "timeout_s": float, "retry_after_s": int}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="[NAME=]SOURCE: an exported IR (.xml) / ONNX file (served as NAME, the raw contract, and "
                        "NAME-detections), a checkpoint or a registry name (NAME)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0: any free port)")
    p.add_argument("--workers", type=int, default=1,
                   help="inferences at once per model (Predictors / OpenVINO requests; default %(default)s)")
    p.add_argument("--max-queue", type=int, default=8,
                   help="requests admitted per model, running + waiting; more get 503 (default %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait (504 after; 0: none)")
    p.add_argument("--set", action="append", default=[], metavar="MODEL.FIELD=VALUE",
                   help=f"per-model setting, fields: {', '.join(_FIELDS)} (repeatable)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body (413 above; default 32)")
    p.add_argument("--max-pixels", type=int, default=50_000_000, help="largest decoded image (413 above)")
    p.add_argument("--threshold", type=float, default=None,
                   help="default score threshold of the detections models (default: each model's own, its best-F1 "
                   "threshold when training stored one, else 0.5)")
    p.add_argument("--backend", choices=("torch", "openvino", "onnx"), help="detections backend (default: from file)")
    p.add_argument("--device", help="CPU / GPU / AUTO (OpenVINO), cpu / cuda (PyTorch, ONNX Runtime)")
    p.add_argument("--precision", help="OpenVINO inference precision: f32, bf16, f16 "
                   "(default: the device's, or f32 where it runs faster here, measured once)")
    p.add_argument("--threads", type=int, default=0, help="inference threads per Predictor (0: the runtime's)")
    p.add_argument("--preset", help="preset of a foreign checkpoint")
    p.add_argument("--no-contract", action="store_true", help="serve IR/ONNX files as detections models only")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    add_tiling_arguments(p)  # the detections models; a contract model is the network as it is, one input
    sec = p.add_argument_group("access (see docs/serve.md): keys are never taken on the command line, where ps "
                                    "shows them")
    sec.add_argument("--api-keys-file", metavar="FILE",
                     help="API keys, one a line (# comments); every request but health, the page and the API "
                          "description then needs 'Authorization: Bearer KEY'. Also: $ISSEG_API_KEYS (a,b,...)")
    sec.add_argument("--open-metrics", action="store_true",
                     help="serve /metrics without a key (default: keyed like the API when there are keys)")
    sec.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (chain), with --tls-key")
    sec.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (unencrypted PEM)")
    sec.add_argument("--cors-origins", metavar="ORIGIN[,ORIGIN...]",
                     help="browser origins allowed to call the API (e.g. https://app.example.com; *: any); "
                          "default: none (CORS off)")
    ray = p.add_argument_group("Ray Serve (isseg[ray]): the same endpoints on replicas Ray places and scales")
    ray.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                     help="deploy on Ray Serve (no ADDRESS: the running cluster, else a local one; host:port, ray://...)")
    ray.add_argument("--replicas", help="--ray: N replicas, or MIN:MAX autoscaling bounds (default 1)")
    ray.add_argument("--cpus-per-replica", type=float, help="--ray: CPUs Ray reserves per replica (default 1)")
    ray.add_argument("--gpus-per-replica", type=float, help="--ray: GPUs per replica (default 0)")
    add_live_arguments(p)


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``MODEL.FIELD=VALUE`` options -> {model: {field: value}}, with one clear error for a bad one."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        model, dot, field = key.rpartition(".")
        if not sep or not dot or not model or field not in _FIELDS:
            raise ValueError(f"--set {item!r}: expected MODEL.FIELD=VALUE with FIELD one of {', '.join(_FIELDS)}")
        try:
            out.setdefault(model, {})[field] = _FIELDS[field](value)
        except ValueError:
            raise ValueError(f"--set {item!r}: {value!r} is not a valid {_FIELDS[field].__name__}") from None
    return out


def _check_ray_options(args: argparse.Namespace) -> None:
    if args.ray:
        from isseg.cluster.serving import parse_replicas

        parse_replicas(args.replicas or "1")
        for flag, value in (("--cpus-per-replica", args.cpus_per_replica),
                            ("--gpus-per-replica", args.gpus_per_replica)):
            if value is not None and value < 0:
                raise ValueError(f"{flag} must be >= 0, got {value}")
        return
    given = [f for f, v in (("--replicas", args.replicas), ("--cpus-per-replica", args.cpus_per_replica),
                            ("--gpus-per-replica", args.gpus_per_replica)) if v is not None]
    if given:
        raise ValueError(f"{', '.join(given)} only apply with --ray")


def _settings(args: argparse.Namespace, serve_settings: Any, model_settings: Any) -> Any:
    """The server's settings from the arguments (keys from the file and the environment), checked."""
    from isseg.serve.auth import load_api_keys
    from isseg.serve.network import check_tls

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: expected 0..65535")
    check_tls(args.tls_cert, args.tls_key)
    if args.ray and args.tls_cert:
        raise ValueError("--tls-cert with --ray: Ray Serve's proxy serves plain HTTP; put TLS in front of it "
                         "(a load balancer or ingress) or serve without --ray")
    origins = [o.strip() for o in (args.cors_origins or "").split(",") if o.strip()]
    if args.cors_origins is not None and not origins:
        raise ValueError("--cors-origins: expected one or more origins, comma-separated")
    return serve_settings(max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_pixels=args.max_pixels,
                          threshold=args.threshold,
                          default=model_settings(args.workers, max(args.max_queue, args.workers), args.timeout),
                          models=parse_sets(args.set), api_keys=load_api_keys(args.api_keys_file),
                          open_metrics=args.open_metrics, cors_origins=origins)


def _warnings(args: argparse.Namespace, settings: Any, port: int) -> None:
    """One line each for a server reachable from other machines without a key, or with keys sent in clear."""
    from isseg.serve.network import is_loopback

    if is_loopback(args.host):
        return
    if not settings.api_keys:
        print(f"isseg serve: warning: listening on {args.host} without an API key: anyone who can reach port "
              f"{port} can run the models; set --api-keys-file or $ISSEG_API_KEYS", file=sys.stderr)
    elif not args.tls_cert:
        print(f"isseg serve: warning: listening on {args.host} without TLS: API keys and images cross the network "
              "in clear; give --tls-cert and --tls-key, or put TLS in front", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    _check_ray_options(args)
    tiling = tiling_from_args(args)
    try:
        import uvicorn

        from isseg.serve.app import create_app
        from isseg.serve.network import bind_listener
        from isseg.serve.settings import ModelSettings, ServeSettings
        from isseg.serve.specs import load_models, plan_models
    except ModuleNotFoundError as exc:
        print(f"isseg serve: error: {exc.name} is missing; install the extra: pip install \"isseg[serve]\"",
              file=sys.stderr)
        return 1
    settings = _settings(args, ServeSettings, ModelSettings)
    streams = stream_specs(args)
    names = [n for served, _, _ in plan_models(args.models, contract=not args.no_contract) for n in served]
    unknown = set(settings.models) - set(names)
    if unknown:
        raise ValueError(f"--set names unknown model(s) {', '.join(sorted(unknown))}; served: {', '.join(names)}")
    load_kwargs = {"backend": args.backend, "device": args.device, "precision": args.precision,
                   "num_threads": args.threads, "preset": args.preset, "contract": not args.no_contract,
                   "tiling": tiling}
    if args.ray:
        if args.ray == "local":  # a new local Ray: its proxy will bind the port here (a running cluster's may hold
            bind_listener(args.host, args.port).close()  # it already, a remote one binds it on its own node)
        _warnings(args, settings, args.port)
        return _run_ray(args, settings, load_kwargs)
    listener = bind_listener(args.host, args.port)  # a port in use fails here, before the models load
    _warnings(args, settings, listener.getsockname()[1] or args.port)
    with listener:
        models = load_models(args.models, settings, **load_kwargs)
        for m in models:
            tiling = getattr(m, "tiling", None)
            tiled = f"; tiled: {describe_tiling(tiling, tuple(m.input_config.size))}" if tiling is not None else ""
            print(f"isseg serve: model '{m.name}' ({m.kind}, workers {m.settings.workers}, "
                  f"queue {m.settings.max_queue}{tiled})", file=sys.stderr)
        app = create_app(models, settings, streams=streams)
        config = uvicorn.Config(app, host=args.host, port=listener.getsockname()[1],
                                log_level=args.log_level, timeout_graceful_shutdown=60,
                                access_log=args.log_level == "debug", ssl_certfile=args.tls_cert,
                                ssl_keyfile=args.tls_key)
        server = uvicorn.Server(config)
        app.state.live.stop_when = lambda: server.should_exit  # open MJPEG answers end on shutdown
        return _serve(server, listener, args)


def _serve(server: Any, listener: Any, args: argparse.Namespace) -> int:
    """Run uvicorn on the bound socket until SIGTERM / Ctrl-C; one error line if it could not start."""
    stopped: list[int] = []
    # uvicorn drains on SIGTERM, then re-raises the signal to the handler it found: make that one a no-op, so a
    # drained server exits with 0 instead of dying of the signal after the drain
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopped.append(signum))
    host, port = listener.getsockname()[:2]
    scheme = "https" if args.tls_cert else "http"
    print(f"isseg serve: {scheme}://{f'[{host}]' if ':' in host else host}:{port} (Ctrl-C stops)", file=sys.stderr)
    try:
        server.run(sockets=[listener])
    except SystemExit as exc:  # uvicorn exits with 1 / 3 when it cannot start: its own line is above
        if server.started:
            raise
        print(f"isseg serve: error: the server could not start on {args.host}:{args.port} (uvicorn exited with "
              f"{exc.code}; its message is above)", file=sys.stderr)
        return 1
    if not server.started and not stopped:
        print(f"isseg serve: error: the server could not start on {args.host}:{args.port} (see the message "
              "above)", file=sys.stderr)
        return 1
    if stopped:
        print("isseg serve: stopped by SIGTERM after finishing the requests in flight", file=sys.stderr)
    return 0


def _run_ray(args: argparse.Namespace, settings: Any, load_kwargs: dict[str, Any]) -> int:
    """The same app (``isseg.serve.create_app``) on Ray Serve replicas; serves until Ctrl-C or SIGTERM."""
    from isseg.cluster.serving import serve_ray

    serve_ray(args.models, settings, load_kwargs, address=args.ray, host=args.host, port=args.port,
              replicas=args.replicas or "1", cpus_per_replica=1.0 if args.cpus_per_replica is None
              else args.cpus_per_replica, gpus_per_replica=args.gpus_per_replica or 0.0, blocking=True)
    return 0
