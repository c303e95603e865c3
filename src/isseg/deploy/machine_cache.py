"""Answers measured once per machine and remembered in ``$ISSEG_CACHE`` (default ``~/.cache/isseg``).

Which OpenVINO performance mode runs a model faster (:func:`isseg.deploy.mode_probe.faster_mode`,
``modes.json``) and which precision the CPU runs float models fastest in
(:func:`isseg.deploy.rate_probe.faster_precision`, ``precisions.json``) are measured, not assumed; a machine
pays each probe once. Keys name what the answer depends on (:func:`machine`: the device
as OpenVINO names it, the cores this process may use, the OpenVINO version). A missing or damaged file is an
empty cache (probed again and rewritten); a read-only home keeps the answer for the run only.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def cache_path(name: str) -> Path:
    """``$ISSEG_CACHE/<name>`` (default ``~/.cache/isseg``, the registry's cache folder)."""
    return Path(os.environ.get("ISSEG_CACHE", Path.home() / ".cache" / "isseg")).expanduser() / name


#: the CPU extensions that decide how fast bf16, f16 and int8 run (the same model name comes with and without AMX)
ISA_FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_fp16")


def cpu_info() -> tuple[str, list[str]]:
    """(CPU model name, the :data:`ISA_FLAGS` it has), from ``/proc/cpuinfo`` where there is one."""
    name = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return name, [f for f in ISA_FLAGS if f in flags]


def machine(device: str) -> str:
    """"<device name> | <n> cores | <ISA flags> | openvino <version>": the machine part of a key."""
    import openvino as ov

    from isseg.deploy.ov_core import shared_core

    name = str(shared_core().get_property(device.split(".")[0].upper(), "FULL_DEVICE_NAME"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} | {cores} cores | {' '.join(cpu_info()[1]) or '-'} | openvino {ov.__version__}"


def read_cache(name: str) -> dict[str, Any]:
    """The entries by key of cache file ``name``; {} when there is none or it is damaged."""
    try:
        data = json.loads(cache_path(name).read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: probe again and rewrite it
    return data if isinstance(data, dict) else {}


def remember(name: str, key: str, entry: dict[str, Any]) -> None:
    """Store ``entry`` (JSON values) under ``key`` in cache file ``name``, dated, atomically; an unwritable cache
    is skipped."""
    from isseg.atomic import atomic_write

    cache = read_cache(name)
    cache[key] = entry | {"date": time.strftime("%Y-%m-%d %H:%M:%S")}
    with contextlib.suppress(OSError):  # a read-only home: the answer still holds for this run
        atomic_write(cache_path(name), json.dumps(cache, indent=1))
