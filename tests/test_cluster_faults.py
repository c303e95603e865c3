"""``predict_ray`` survives an actor's death: at start-up, and mid-run with shards already written. The actor
kills its own process with SIGKILL (an out-of-memory kill) where the test asks, through the test-only fault
files of ``$ISSEG_TEST_ACTOR_FAULTS`` (:mod:`isseg.cluster.actor`); each file is one death. Every image must end
up in exactly one record, equal to the records of an actor that did not die; past the retry bound the run
ends with one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
ray = pytest.importorskip("ray")

from isseg.cluster import predict_ray  # noqa: E402
from isseg.cluster.actor import (  # noqa: E402
    FAULTS_ENV,
    PredictActor,
    PredictorSpec,
    decode_batch,
    sweep_dead_copies,
)
from isseg.cluster.pipeline import START_UP_DEATHS  # noqa: E402
from isseg.deploy.predictor import PredictorOptions  # noqa: E402
from isseg.engine.records import iter_record_files, read_records  # noqa: E402

COUNT = 6  # images: 3 shards of 2, 3 batches of 2 for the one actor


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory):
    """The fault folder, in the environment of a local Ray started after it is set (its workers inherit it)."""
    folder = tmp_path_factory.mktemp("faults")
    os.environ[FAULTS_ENV] = str(folder)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield folder
    finally:
        ray.shutdown()
        del os.environ[FAULTS_ENV]


@pytest.fixture(scope="module")
def images(coco_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fault-images")
    for f in sorted((coco_mini / "val2017").glob("*.jpg"))[:COUNT]:
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


@pytest.fixture(scope="module")
def reference(images: Path, exported) -> dict[str, dict]:
    """The records of an actor that does not die (the actor's code called here, as Ray calls it)."""
    paths = sorted(str(p) for p in images.iterdir())
    spec = PredictorSpec(str(exported.xml), PredictorOptions(threshold=0.05, num_threads=2, mode="throughput"))
    out = PredictActor(spec)(decode_batch({"index": np.arange(len(paths)), "path": np.array(paths)}))
    return {Path(p).name: json.loads(r) for p, r in zip(paths, out["record"])}


def _run(images: Path, exported, out: Path) -> dict:
    return predict_ray([str(images)], str(exported.xml), out, threshold=0.05, actors=1, cpus_per_actor=2,
                       shard_size=2, coco=False)


def _check_exactly_once(out: Path, reference: dict[str, dict]) -> None:
    seen: dict[str, list[dict]] = {}
    for f in iter_record_files([out]):
        for r in read_records(f):
            seen.setdefault(Path(r["file"]).name, []).append(r)
    assert sorted(seen) == sorted(reference) and all(len(v) == 1 for v in seen.values()), {
        k: len(v) for k, v in seen.items()}
    assert sum(len(r["detections"]) for r in reference.values()) > 100  # the records hold something to compare
    for name, (rec,) in seen.items():
        want = reference[name]
        assert rec["error"] is None and len(rec["detections"]) == len(want["detections"]), name
        for a, b in zip(rec["detections"], want["detections"]):
            assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-5)
            np.testing.assert_allclose(a["box"], b["box"], atol=1e-2)
            assert a["mask"] == b["mask"]


def _claimed(faults: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in faults.iterdir() if p.name.startswith(prefix) and p.name.endswith(".done"))


def test_an_actor_killed_at_start_up_is_replaced(faults: Path, images: Path, exported, reference, tmp_path: Path):
    (faults / "init-a").touch()
    summary = _run(images, exported, tmp_path / "out")
    assert len(_claimed(faults, "init-a")) == 1, "the actor did not die"
    assert (summary["images"], summary["errors"], summary["images_computed"]) == (COUNT, 0, COUNT)
    _check_exactly_once(tmp_path / "out", reference)


def test_an_actor_killed_mid_run_costs_a_retry(faults: Path, images: Path, exported, reference, tmp_path: Path):
    """The actor dies at its 2nd call, before answering it (the 1st shard is done by then): the batch is redone."""
    (faults / "call-2-a").touch()
    summary = _run(images, exported, tmp_path / "out")
    assert len(_claimed(faults, "call-2-a")) == 1, "the actor did not die"
    assert (summary["images"], summary["shards"], summary["images_computed"]) == (COUNT, 3, COUNT)
    _check_exactly_once(tmp_path / "out", reference)


def test_deaths_past_the_bound_end_the_run_in_one_line(faults: Path, images: Path, exported, tmp_path: Path):
    """START_UP_DEATHS deaths in a row while the actor starts (Ray restarts each actor RETRIES times, Ray Data
    replaces a used-up one RETRIES times): the run ends, with one line, instead of starting actors for ever."""
    for i in range(START_UP_DEATHS):
        (faults / f"init-bound-{i:02d}").touch()
    with pytest.raises(RuntimeError) as failed:
        _run(images, exported, tmp_path / "out")
    message = str(failed.value)
    assert "\n" not in message and message.startswith("the Ray pipeline failed ("), message
    assert message.endswith("the shards written are kept: run again to resume"), message
    assert len(_claimed(faults, "init-bound-")) == START_UP_DEATHS
    assert not list((tmp_path / "out").glob("shard-*.jsonl"))


def test_a_ray_run_prints_only_its_own_lines(faults: Path, images: Path, exported, tmp_path: Path):
    """``isseg predict --ray`` (joining this module's Ray) prints its summary and nothing of Ray's: the C++
    core's error-level line about actor arguments and Ray Data's progress-bar warning are filtered out."""
    import subprocess
    import sys

    address = ray.get_runtime_context().gcs_address
    r = subprocess.run([sys.executable, "-m", "isseg", "predict", str(images), "--model", str(exported.xml),
                        "--output", str(tmp_path / "out"), "--ray", address, "--shard-size", "3", "--actors", "1",
                        "--cpus-per-actor", "2", "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert lines and all(line.startswith(("isseg predict", "  Ray start")) for line in lines), lines


def test_quiet_ray_drops_only_the_known_lines():
    """The filter on file descriptor 2: Ray's known lines (written from C, as Ray's core writes them, and from
    Python) are dropped; anything else (an error of Ray's, a traceback, isseg's lines) passes, in order."""
    import subprocess
    import sys

    code = r'''
import os, sys
from isseg.cluster.quiet import quiet_ray
with quiet_ray():
    os.write(2, b"isseg predict: first\n")
    os.write(2, b"[2026-12-04 08:03:44,785 E 24998 24998] core_worker.cc:2465: Actor with class name: "
                b"'MapWorker(MapBatches(PredictActor))' and ID: 'ab' has constructor arguments in the object store "
                b"and max_restarts > 0. If the arguments go out of scope ...\n")
    print("2026-12-04 08:03:44,789\tWARNING __init__.py:28 -- Progress bars disabled. To enable, set "
          "`ray.data.DataContext.get_current().enable_progress_bars = True`.", file=sys.stderr, flush=True)
    os.write(2, b"[2026-12-04 08:03:45,000 E 1 1] core_worker.cc:99: a real error of Ray's\n")
    print("Token authentication is disabled for this Ray cluster. Anyone with network access ...",
          file=sys.stderr, flush=True)
    os.write(2, b"progress 50%\r")
    os.write(2, b"isseg predict: last\n")
print("isseg predict: after", file=sys.stderr)
'''
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)  # bytes: \r kept
    assert r.returncode == 0, r.stderr
    assert r.stderr == (b"isseg predict: first\n[2026-12-04 08:03:45,000 E 1 1] core_worker.cc:99: a real error of "
                        b"Ray's\nToken authentication is disabled for this Ray cluster. Anyone with network access "
                        b"...\nprogress 50%\risseg predict: last\nisseg predict: after\n"), r.stderr


def test_model_copies_of_dead_actors_are_swept(tmp_path: Path) -> None:
    """An actor killed by Ray leaves its model copy behind; the next actor to copy a model removes it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f"isseg-ray-model-{dead.pid}-abc"
    gone.mkdir()
    (gone / "security-0002.bin").write_bytes(b"weights")
    kept = [tmp_path / f"isseg-ray-model-{os.getppid()}-def",  # a live process's
            tmp_path / f"isseg-ray-model-{os.getpid()}-ghi",  # this process's own
            tmp_path / "isseg-ray-model-xyz"]  # not a copy this version names
    for folder in kept:
        folder.mkdir()
    assert sweep_dead_copies(str(tmp_path)) == [gone]
    assert not gone.exists() and all(folder.is_dir() for folder in kept)
