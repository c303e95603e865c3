"""``isseg predict --ray`` / ``isseg.cluster.predict_ray`` on a local Ray started once for this module.

The same detections as ``isseg predict``; corrupt images as error records; a run killed with SIGKILL and started
again loses and duplicates no image and equals an uninterrupted run; the shards evaluate like ``isseg predict``'s
results; the input listing (folders, globs, manifests, file:// URIs) and the shard checks on resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("openvino")
ray = pytest.importorskip("ray")

from isseg.cli.main import main  # noqa: E402
from isseg.cluster import ShardLayout, list_inputs, predict_ray  # noqa: E402
from isseg.engine.records import iter_record_files, read_records  # noqa: E402

COCO_NAMES = 5  # coco-mini images in the test folder (the model takes ~1 s an image on 2 shared cores)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (start-up takes seconds), shut down at its end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def images(coco_mini, tmp_path_factory) -> Path:
    """5 coco-mini photos, a grayscale PNG (no numeric id), a corrupt JPEG and an empty file."""
    folder = tmp_path_factory.mktemp("cluster-images")
    files = sorted((coco_mini / "val2017").glob("*.jpg"))[:COCO_NAMES]
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    gray = cv2.cvtColor(cv2.imread(str(files[0])), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(folder / "gray.png"), cv2.resize(gray, (320, 240)))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image: folders list images only")
    return folder


@pytest.fixture(scope="module")
def reference(images, exported, tmp_path_factory) -> dict[str, dict]:
    """``isseg predict`` without Ray: its records by file name."""
    out = tmp_path_factory.mktemp("reference")
    rc = main(["predict", str(images), "--model", str(exported.xml), "--output", str(out), "--threshold", "0.05",
               "--no-images", "--quiet"])
    assert rc == 1  # the two corrupt files failed, the rest ran
    records = read_records(out / "results.jsonl")
    return {Path(r["file"]).name: r for r in records}


@pytest.fixture(scope="module")
def ray_run(local_ray, images, exported, tmp_path_factory, reference) -> Path:
    """``isseg predict --ray`` over the folder: 1 actor x 2 CPUs (the thread count of the reference), shards of 3."""
    out = tmp_path_factory.mktemp("ray-run")
    rc = main(["predict", str(images), "--model", str(exported.xml), "--output", str(out), "--threshold", "0.05",
               "--ray", "--shard-size", "3", "--actors", "1", "--cpus-per-actor", "2", "--quiet"])
    assert rc == 1  # corrupt inputs are reported through the exit code, like isseg predict
    return out


def _by_name(folder: Path) -> dict[str, list[dict]]:
    seen: dict[str, list[dict]] = {}
    for f in iter_record_files([folder]):
        for r in read_records(f):
            seen.setdefault(Path(r["file"].split("://")[-1]).name, []).append(r)
    return seen


def _same_detections(a: dict, b: dict) -> None:
    assert (a["height"], a["width"]) == (b["height"], b["width"])
    assert len(a["detections"]) == len(b["detections"])
    for da, db in zip(a["detections"], b["detections"]):
        assert da["label"] == db["label"] and da["name"] == db["name"]
        assert da["score"] == pytest.approx(db["score"], abs=1e-5)
        np.testing.assert_allclose(da["box"], db["box"], atol=1e-2)
        assert da["mask"] == db["mask"]  # COCO RLE of the pasted mask, pixel for pixel


def test_actor_in_latency_mode_equals_isseg_predict(images, exported, reference):
    """The actor's two stages called directly (a Ray Data batch as a dict) in latency mode, the mode of
    non-OpenVINO models: the same records as ``isseg predict`` (throughput mode), bad files as error rows."""
    from isseg.cluster.actor import PredictActor, PredictorSpec, decode_batch
    from isseg.deploy.predictor import PredictorOptions

    paths = sorted(str(p) for p in images.iterdir() if p.suffix != ".txt")
    batch = decode_batch({"index": np.arange(len(paths)), "path": np.array(paths)})
    spec = PredictorSpec(str(exported.xml), PredictorOptions(threshold=0.05, num_threads=2, mode="latency"))
    actor = PredictActor(spec)
    assert actor.predictor.runtime.num_requests == 1
    out = actor(batch)
    assert list(out["index"]) == list(range(len(paths)))
    for path, line in zip(paths, out["record"]):
        rec, name = json.loads(line), Path(path).name
        if name in ("broken.jpg", "empty.png"):
            assert rec["error"] and name in rec["error"]
        else:
            _same_detections(rec, reference[name])


def test_ray_equals_isseg_predict(ray_run, reference, images):
    shards = sorted(p.name for p in ray_run.glob("shard-*.jsonl"))
    assert shards == ["shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]  # 8 images, shards of 3
    got = _by_name(ray_run)
    expected = sorted(p.name for p in images.iterdir() if p.suffix != ".txt")
    assert sorted(got) == expected and all(len(v) == 1 for v in got.values())
    for name, (rec,) in got.items():
        if name in ("broken.jpg", "empty.png"):
            assert rec["error"] and name in rec["error"] and rec["detections"] == []
            assert rec["error"] == reference[name]["error"]  # the one decoder's one line, as isseg predict's
            continue
        assert rec["error"] is None
        assert rec["image_id"] == (int(Path(name).stem) if Path(name).stem.isdigit() else None)
        _same_detections(rec, reference[name])
    summary = json.loads((ray_run / "summary.json").read_text())
    n_det = sum(len(r["detections"]) for (r,) in got.values())
    assert n_det > 10
    assert (summary["images"], summary["errors"], summary["detections"]) == (8, 2, n_det)
    coco = json.loads((ray_run / "results.json").read_text())  # COCO results: the 5 images with a numeric id
    assert {r["image_id"] for r in coco} <= {int(n[:-4]) for n in expected if n[:-4].isdigit()}
    assert len(coco) == sum(len(r["detections"]) for n, (r,) in got.items() if r["image_id"] is not None)


def test_kill_and_resume(local_ray, ray_run, images, exported, tmp_path):
    """SIGKILL a run (a manifest of file:// URIs) once its first shard exists, start it again: every image exactly
    once, equal to the uninterrupted run."""
    manifest = tmp_path / "images.txt"
    names = sorted(p.name for p in images.iterdir() if p.suffix != ".txt")
    manifest.write_text("# one image a line\n" + "".join(f"{(images / n).as_uri()}\n" for n in names))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "isseg", "predict", str(manifest), "--model", str(exported.xml), "--output",
           str(out), "--threshold", "0.05", "--ray", local_ray, "--shard-size", "2", "--actors", "1",
           "--cpus-per-actor", "2", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list(out.glob("shard-*.jsonl")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stdout.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = sorted(p.name for p in out.glob("shard-*.jsonl"))
    assert 1 <= len(done_at_kill) < 4  # interrupted: 8 images make 4 shards of 2
    summary = predict_ray([str(manifest)], str(exported.xml), out, threshold=0.05, actors=1, cpus_per_actor=2,
                          shard_size=2)
    assert summary["shards_done_before"] == len(done_at_kill)
    assert summary["images_computed"] == 8 - 2 * len(done_at_kill)
    assert (summary["images"], summary["errors"], summary["shards"]) == (8, 2, 4)
    got, first = _by_name(out), _by_name(ray_run)
    assert sorted(got) == names and all(len(v) == 1 for v in got.values())  # none lost, none twice
    for name in names:
        (a,), (b,) = got[name], first[name]
        assert a["file"] == (images / name).as_uri()
        assert a["detections"] == b["detections"] and (a["error"] is None) == (b["error"] is None)
    # a finished run started again computes nothing (and needs no Ray work)
    again = predict_ray([str(manifest)], str(exported.xml), out, threshold=0.05)
    assert again["images_computed"] == 0 and again["shards_done_before"] == 4 and again["images"] == 8


def test_evaluate_reads_the_shards(ray_run, coco_mini, reference, tmp_path, capsys):
    """``isseg evaluate --results SHARD_DIR`` scores the shards exactly like ``isseg predict``'s records."""
    import isseg
    from isseg.config import COCO_CATEGORY_IDS
    from isseg.engine.records import records_to_coco

    ann = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    ids = {int(Path(n).stem) for n in reference if Path(n).stem.isdigit()}
    assert len(ids) == COCO_NAMES
    ann["images"] = [im for im in ann["images"] if im["id"] in ids]
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] in ids]
    # the folder's other files, listed without objects: records without a numeric id match them by file name
    others = {"gray.png": 1, "broken.jpg": 2, "empty.png": 3}
    ann["images"] += [{"id": i, "file_name": n, "height": 240, "width": 320} for n, i in others.items()]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(ann))
    report_path = tmp_path / "report.json"
    rc = main(["evaluate", "--data", str(gt), "--results", str(ray_run), "--no-analysis", "--output",
               str(report_path)])
    out = capsys.readouterr()
    assert rc in (0, None), out.err
    report = json.loads(report_path.read_text())
    ok = [dict(r, image_id=r["image_id"] if Path(r["file"]).stem.isdigit() else others[Path(r["file"]).name])
          for r in reference.values() if r["error"] is None]
    theirs, _ = records_to_coco(ok, COCO_CATEGORY_IDS)
    assert theirs and report["images"] == 6
    expected = isseg.coco_eval(str(gt), theirs)
    for iou in ("bbox", "segm"):
        for k, v in expected[iou].items():
            assert report[iou][k] == pytest.approx(v, abs=1e-6), (iou, k)


# ------------------------------------------------------------------------------------------ without Ray work
def test_list_inputs(images, tmp_path):
    names = sorted(p.name for p in images.iterdir() if p.suffix != ".txt")
    listed, errors = list_inputs([str(images), str(images / "*.jpg"), str(tmp_path / "missing")])
    assert [Path(p).name for p in listed] == names and len(listed) == len(set(listed))  # de-duplicated, sorted
    assert errors == [f"{tmp_path / 'missing'}: no such file, folder, camera or stream"]
    sub = tmp_path / "manifest"
    sub.mkdir()
    (sub / "list.lst").write_text(f"# comment\n\n../relative.jpg\n{images / 'gray.png'}\n{images.as_uri()}/x.jpg\n")
    listed, errors = list_inputs([str(sub / "list.lst")])
    assert listed == sorted([str(tmp_path / "relative.jpg"), str(images / "gray.png"), f"{images.as_uri()}/x.jpg"])
    uris, errors = list_inputs([images.as_uri(), images.as_uri() + "/0*.jpg"])
    assert not errors and len(uris) == len(names) and all(u.startswith("file://") for u in uris)
    (sub / "bad.txt").write_text("photos/*.jpg\n")
    assert list_inputs([str(sub / "bad.txt")])[1] == [f"{sub / 'bad.txt'}: line 1: a manifest lists files, not "
                                                       "patterns ('photos/*.jpg')"]


def test_shard_layout_refuses_another_run(tmp_path):
    paths = [f"img{i}.jpg" for i in range(5)]
    layout = ShardLayout.open(tmp_path, paths, 2, {"model": "m.xml"})
    assert layout.count == 3 and list(layout.chunk(2)) == [4]
    rec = {"file": "img0.jpg", "image_id": None, "height": None, "width": None, "frame": None, "error": "x",
           "detections": []}
    layout.write(0, [rec, dict(rec, file="img1.jpg")])
    (tmp_path / ".shard-00001.jsonl.tmp").write_text('{"file": "img2.jpg"')  # a write killed halfway
    again = ShardLayout.open(tmp_path, paths, None, {"model": "m.xml"})
    assert again.pending() == [1, 2] and not (tmp_path / ".shard-00001.jsonl.tmp").exists()
    with pytest.raises(ValueError, match="another input list"):
        ShardLayout.open(tmp_path, paths + ["img5.jpg"], None, {"model": "m.xml"})
    with pytest.raises(ValueError, match="--shard-size 2, not 3"):
        ShardLayout.open(tmp_path, paths, 3, {"model": "m.xml"})
    with pytest.raises(ValueError, match=r"other settings \(model\)"):
        ShardLayout.open(tmp_path, paths, None, {"model": "other.xml"})
    with pytest.raises(RuntimeError, match="do not match"):
        again.write(1, [dict(rec, file="img3.jpg"), dict(rec, file="img2.jpg")])
    (tmp_path / "shard-00001.jsonl").write_text(json.dumps(dict(rec, file="img2.jpg")) + "\n")  # one of two
    with pytest.raises(ValueError, match="shard-00001.jsonl: does not hold the records of its 2 inputs"):
        again.pending()


def test_bad_model_fails_in_one_line(images, tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found: .*nope.xml"):
        predict_ray([str(images)], str(tmp_path / "nope.xml"), tmp_path / "out")
    (tmp_path / "lonely.xml").write_text("<net/>")
    with pytest.raises(FileNotFoundError, match="weights of the IR not found: .*lonely.bin"):
        predict_ray([str(images)], str(tmp_path / "lonely.xml"), tmp_path / "out")
    from isseg.cluster.pipeline import root_cause

    try:
        try:
            raise ValueError("photos/a.xml: not an OpenVINO IR")
        except ValueError as inner:
            raise RuntimeError("Traceback ...\n  File x\nValueError: photos/a.xml: not an OpenVINO IR") from inner
    except RuntimeError as exc:
        assert root_cause(exc) == "ValueError: photos/a.xml: not an OpenVINO IR"


def test_classes_by_name_and_index(exported):
    from isseg.cluster.actor import PredictorSpec
    from isseg.cluster.pipeline import class_names_of
    from isseg.stream import class_indices

    names = class_names_of(PredictorSpec(str(exported.xml)))  # read from the model, once, on the driver
    assert class_indices("person, 2", names) == (0, 2)
    assert class_indices("7,1", names) == (1, 7) and class_indices(None, names) is None
    with pytest.raises(ValueError, match="unknown class 'unicorn'; the model's classes are: person, bicycle, car"):
        class_indices("unicorn", names)
