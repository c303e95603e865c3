"""Training: schedule, batch order, crash-safe checkpoints, bit-exact resume, fine-tuning, the CLI, and
that the real model learns (loss falls; a few synthetic images are overfitted to box AP50 >= 0.8).

The model is the real Mask R-CNN at a small input (96 px) with a narrow FPN / box head, GroupNorm (it
trains from scratch; frozen BN would need pretrained statistics) and few proposals, so that the whole file
runs in about a minute and a half on two CPU cores (one torch thread, see ``_one_thread``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from helpers import TINY_TRAIN as TINY
from helpers import TRAIN_SIZE as SIZE
from isseg.config import get_config
from isseg.data.synth import CLASS_NAMES, make_synthetic_dataset
from isseg.engine.config_overrides import apply_overrides
from isseg.engine.sampler import SeededDataset, TrainSampler
from isseg.engine.schedule import LRSchedule, resolve_steps
from isseg.engine.trainer import TrainConfig, train
from isseg.weights.checkpoint import atomic_save as atomic_torch_save

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """4 training images (at most 3 shapes each) + 1 held-out image."""
    out = tmp_path_factory.mktemp("synth")
    return make_synthetic_dataset(out, 5, seed=1, image_size=SIZE, val_fraction=0.2, max_objects=3)


def _config(synth: dict[str, Path], output: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        data=str(synth["train_json"]), images=str(synth["train_images"]), output=str(output), overrides=TINY,
        iterations=4, batch_size=2, lr=0.02, warmup_iters=2, log_every=1, workers=0, progress=False,
        tensorboard=False, checkpoint_every=1000,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- pure parts
def test_lr_schedule_warmup_step_cosine() -> None:
    s = LRSchedule(base_lr=0.1, max_iter=100, kind="step", steps=(60, 80), warmup_iters=10,
                   warmup_factor=0.01)
    assert s.lr(0) == pytest.approx(0.001)
    assert s.lr(5) == pytest.approx(0.1 * (0.01 * 0.5 + 0.5))
    assert s.lr(10) == pytest.approx(0.1)
    assert [s.lr(i) for i in (59, 60, 80)] == pytest.approx([0.1, 0.01, 0.001])
    c = LRSchedule(base_lr=0.1, max_iter=100, kind="cosine", min_lr_factor=0.1)
    assert [c.lr(i) for i in (0, 50, 100)] == pytest.approx([0.1, 0.055, 0.01])
    assert resolve_steps([0.5, 300], 1000) == (300, 500)
    with pytest.raises(ValueError, match="steps"):
        LRSchedule(base_lr=0.1, max_iter=10, steps=(8, 2))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert s.apply(opt, 70) == pytest.approx(0.01) and opt.param_groups[0]["lr"] == pytest.approx(0.01)


def test_sampler_global_batches_are_split_across_ranks_and_resume() -> None:
    single = TrainSampler(10, batch_size=4, world_size=1, rank=0, seed=3)
    ranks = [TrainSampler(10, batch_size=2, world_size=2, rank=r, seed=3) for r in range(2)]
    assert single.iters_per_epoch == ranks[0].iters_per_epoch == 2
    for epoch in (0, 1):
        single.set_epoch(epoch)
        for r in ranks:
            r.set_epoch(epoch)
        flat = [i for _, i in single]
        per_rank = [[i for _, i in r] for r in ranks]
        for it in range(2):  # the global batch of iteration `it` = rank 0's slice + rank 1's slice
            assert flat[4 * it:4 * it + 4] == per_rank[0][2 * it:2 * it + 2] + per_rank[1][2 * it:2 * it + 2]
        assert len(set(flat)) == 8
    single.set_epoch(0)
    e0 = [i for _, i in single]
    single.set_epoch(1)
    assert [i for _, i in single] != e0  # reshuffled every epoch
    resumed = TrainSampler(10, batch_size=4, seed=3)
    resumed.set_epoch(1, start_iter=1)
    full = TrainSampler(10, batch_size=4, seed=3)
    full.set_epoch(1)
    assert list(resumed) == list(full)[4:] and len(resumed) == 4
    tiny = TrainSampler(3, batch_size=2, world_size=2, rank=1, seed=0)  # smaller than one global batch
    assert tiny.iters_per_epoch == 1 and len(list(tiny)) == 2


def test_seeded_dataset_draws_per_sample_not_per_process() -> None:
    class Draw:
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> float:
            return torch.rand(()).item()

    ds = SeededDataset(Draw(), seed=0)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = [ds[(0, i)] for i in range(4)]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is untouched
    torch.manual_seed(999)
    assert [ds[(0, i)] for i in reversed(range(4))] == a[::-1]  # same sample -> same draw, any order
    assert ds[(1, 0)] != a[0]  # another epoch -> another draw


def test_config_overrides() -> None:
    cfg = apply_overrides(get_config("security-0002"), ["input.size=[64,96]", "roi.score_thresh=1",
                                                        "backbone.norm=gn"])
    assert cfg.input.size == (64, 96) and cfg.roi.score_thresh == 1.0 and cfg.backbone.norm == "gn"
    for bad, match in [("roi.nope=1", "no field 'nope'"), ("roi=1", "is a section"),
                       ("rpn.nms_thresh=high", "expected a float"), ("justtext", "KEY=VALUE")]:
        with pytest.raises(ValueError, match=match):
            apply_overrides(cfg, [bad])


def test_checkpoint_write_killed_midway_keeps_the_previous_file(tmp_path: Path) -> None:
    """A process SIGKILLed after writing the temporary file but before the rename (the worst moment)."""
    target = tmp_path / "last.pth"
    atomic_torch_save({"iteration": 1, "w": torch.ones(1000)}, target)
    script = textwrap.dedent(f"""
        import os, signal, torch
        from isseg.weights.checkpoint import atomic_save as atomic_torch_save
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        atomic_torch_save({{"iteration": 2, "w": torch.zeros(1000)}}, {str(target)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert (tmp_path / ".last.pth.tmp").is_file()  # the half-finished write is a separate file
    state = torch.load(target, weights_only=False)
    assert state["iteration"] == 1 and torch.equal(state["w"], torch.ones(1000))
    atomic_torch_save({"iteration": 3}, target)  # the next write replaces the leftover
    assert torch.load(target, weights_only=False)["iteration"] == 3
    assert not (tmp_path / ".last.pth.tmp").exists()


# --------------------------------------------------------------------------------------- training runs
class _Stop(Exception):
    pass


def _stop_at(stop: int):  # noqa: ANN202 - an on_iteration_end hook
    """A hook that dies in iteration ``stop``, after the checkpoint of the iteration before was written."""

    def hook(iteration: int, values: dict[str, float], model: torch.nn.Module) -> None:
        if iteration == stop:
            raise _Stop

    return hook


def test_resume_after_interruption_is_bit_exact(synth: dict[str, Path], tmp_path: Path) -> None:
    """4 iterations straight == 2 iterations, a kill, --resume, 2 more (weights, losses, metrics rows).

    Uses DataLoader workers, the random flip and multi-scale training, so every RNG the run touches
    (data order, augmentation, python's size choice, RPN / RoI sampling) must be restored exactly.
    """
    kw = dict(workers=1, checkpoint_every=2, overrides=TINY + (f"input.train_sizes=[{SIZE},80]",))
    straight = train(_config(synth, tmp_path / "a", **kw))

    with pytest.raises(_Stop):  # dies in iteration 3, after last.pth of iteration 2 was written
        train(_config(synth, tmp_path / "b", **kw), on_iteration_end=_stop_at(3))
    assert torch.load(tmp_path / "b" / "last.pth", weights_only=False)["iteration"] == 2
    resumed = train(_config(synth, tmp_path / "b", resume=True, **kw))
    assert resumed.iteration == straight.iteration == 4

    a = torch.load(tmp_path / "a" / "last.pth", weights_only=False)
    b = torch.load(tmp_path / "b" / "last.pth", weights_only=False)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [h["loss"] for h in straight.history][2:] == [h["loss"] for h in resumed.history]
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]  # the killed run's row 3 was replaced
    assert (tmp_path / "b" / "metrics.csv").read_text().splitlines()[0].startswith("iteration,epoch,lr")
    with pytest.raises(ValueError, match="pass --resume"):
        train(_config(synth, tmp_path / "a"))  # never silently overwrite a run


def test_time_budget_stops_the_run_once(synth: dict[str, Path], tmp_path: Path) -> None:
    """``max_minutes`` ends the run: one validation, one checkpoint, no more iterations (it used to leave only the
    epoch's loop and go on, validating and saving after every later iteration until the last one)."""
    result = train(_config(synth, tmp_path / "run", iterations=40, max_minutes=1e-4, val_data=str(synth["val_json"]),
                           val_images=str(synth["val_images"])))
    assert result.stopped_by_time and result.iteration < 40
    evaluations = [h for h in result.history if any(k.startswith("val_") for k in h)]
    assert len(evaluations) == 1 and evaluations[0]["iteration"] == result.iteration
    assert torch.load(tmp_path / "run" / "last.pth", weights_only=False)["iteration"] == result.iteration


def test_finetune_from_weights_with_other_classes(synth: dict[str, Path], tmp_path: Path) -> None:
    """Weights of a 2-class model on a 5-class dataset: shared layers are kept, class layers re-made."""
    from isseg.model.mask_rcnn import build_model
    from isseg.weights.loading import save_checkpoint

    torch.manual_seed(5)
    donor = build_model(apply_overrides(get_config("security-0002", class_names=("a", "b")), TINY))
    ckpt = save_checkpoint(tmp_path / "donor.pth", donor)
    seen: dict[str, torch.Tensor] = {}

    def grab(iteration: int, values: dict[str, float], model: torch.nn.Module) -> None:
        seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        raise _Stop

    with pytest.raises(_Stop):  # lr ~ 0: after one step the weights are still the initial ones
        train(_config(synth, tmp_path / "ft", weights=str(ckpt), lr=1e-12, warmup_iters=0),
              on_iteration_end=grab)
    src = donor.state_dict()
    assert seen["roi_heads.box_predictor.cls_score.weight"].shape[0] == len(CLASS_NAMES) + 1
    assert seen["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape[0] == len(CLASS_NAMES)
    shared = ("backbone.body.conv1.weight", "backbone.fpn.layer_blocks.0.0.weight",
              "rpn.head.conv.0.0.weight", "roi_heads.box_head.fc6.weight",
              "roi_heads.mask_predictor.conv5_mask.weight")
    for key in shared:
        torch.testing.assert_close(seen[key], src[key], rtol=0, atol=1e-6)


def test_overfit_few_images_loss_falls_and_box_ap50(synth: dict[str, Path], tmp_path: Path) -> None:
    """The real model, from scratch, learns 4 images: loss falls and their box AP50 reaches >= 0.8.

    Validation runs on the training images themselves (the point is fitting), at the end only, which
    also exercises the periodic-evaluation path and best.pth.
    """
    iterations = 60  # box AP50 measured 1.0 from iteration 40 on (0.52 at 20)
    result = train(_config(
        synth, tmp_path / "fit", iterations=iterations, batch_size=4, warmup_iters=10, log_every=10,
        horizontal_flip=0.0, val_data=str(synth["train_json"]), val_images=str(synth["train_images"]),
        eval_every=iterations, schedule="cosine",
    ))  # fmt: skip
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert len(losses) == iterations // 10
    assert losses[-1] < 0.5 * losses[0], losses
    assert result.last_eval is not None and result.best_checkpoint is not None
    ap50 = result.last_eval["bbox"]["AP50"]
    assert ap50 >= 0.8, result.last_eval["bbox"]
    best = torch.load(result.best_checkpoint, weights_only=False)
    assert best["format"] == "isseg" and best["best_metric"] == pytest.approx(result.last_eval["segm"]["AP"])
    header = (tmp_path / "fit" / "metrics.csv").read_text().splitlines()[0]
    assert "val_bbox_AP50" in header and "loss_mask" in header


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_optimizer_steps_fused_with_the_per_tensor_update(kind: str) -> None:
    """On CPU both optimizers run torch's fused step (one kernel over all parameters; ~4x faster for AdamW,
    ``benchmarks/optimizer_step.py``), and it makes the per-tensor step's update, up to float rounding."""
    from isseg.engine.train_setup import build_optimizer
    from isseg.model.mask_rcnn import build_model

    models = [build_model(apply_overrides(get_config("security-0002", class_names=CLASS_NAMES), TINY)) for _ in "ab"]
    models[1].load_state_dict(models[0].state_dict())
    opts = [build_optimizer(m, 1e-2, 0.9, 0.05, kind=kind, fuse=fuse) for m, fuse in zip(models, (True, False))]
    assert opts[0].defaults["fused"] is True and not opts[1].defaults["fused"]
    trained = [[p for g in opt.param_groups for p in g["params"]] for opt in opts]
    before = [p.detach().clone() for p in trained[0]]
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in trained[0]]
        for params, opt in zip(trained, opts):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for a, b, start in zip(*trained, before):
        assert not torch.equal(a, start)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adamw_decays_weights_not_norms_and_resumes(synth: dict[str, Path], tmp_path: Path) -> None:
    """``optimizer="adamw"``: torch's AdamW with betas (momentum, 0.999), the norm layers' affine parameters in a
    group without weight decay, its moments saved in ``last.pth`` and restored by ``resume`` (bit-exact)."""
    from isseg.engine.train_config import check_values
    from isseg.engine.train_setup import build_optimizer
    from isseg.model.mask_rcnn import build_model

    model = build_model(apply_overrides(get_config("security-0002", class_names=CLASS_NAMES), TINY))
    opt = build_optimizer(model, 1e-3, 0.8, 0.05, kind="adamw")
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.999)
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.GroupNorm) for p in m.parameters()
             if p.requires_grad}
    assert norms and [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert {id(p) for p in opt.param_groups[1]["params"]} == norms

    kw = dict(optimizer="adamw", lr=1e-3, weight_decay=0.05, checkpoint_every=2)
    straight = train(_config(synth, tmp_path / "a", **kw))
    with pytest.raises(_Stop):
        train(_config(synth, tmp_path / "b", **kw), on_iteration_end=_stop_at(3))
    resumed = train(_config(synth, tmp_path / "b", resume=True, **kw))
    a = torch.load(tmp_path / "a" / "last.pth", weights_only=False)
    b = torch.load(tmp_path / "b" / "last.pth", weights_only=False)
    assert "exp_avg_sq" in next(iter(a["optimizer"]["state"].values()))
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [h["loss"] for h in straight.history][2:] == [h["loss"] for h in resumed.history]
    from isseg.cli.main import build_parser
    from isseg.cli.train import train_config as cli_config

    args = build_parser().parse_args(["train", "--data", str(synth["train_json"]), "--images", "i", "--optimizer",
                                      "adamw", "--weight-decay", "0.05", "--recipe", "fast-cpu"])
    assert (cli_config(args).optimizer, cli_config(args).weight_decay) == ("adamw", 0.05)  # the recipe's is sgd
    for bad, message in ((dict(optimizer="adam"), "optimizer must be sgd or adamw"),
                         (dict(optimizer="adamw", momentum=1.0), "beta1")):
        with pytest.raises(ValueError, match=message):
            check_values(_config(synth, tmp_path / "c", **bad))


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_train_writes_run_folder_and_reports_bad_input(synth: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from isseg.cli.main import main

    out = tmp_path / "run"
    args = ["train", "--data", str(synth["train_json"]), "--images", str(synth["train_images"]),
            "--val-data", str(synth["val_json"]), "--val-images", str(synth["val_images"]),
            "--output", str(out), "--iterations", "2", "--batch-size", "1", "--workers", "0", "--lr", "0.01",
            "--warmup-iters", "1", "--log-every", "1", "--clip-grad", "10", "--amp", "bf16", "--no-progress",
            "--schedule", "cosine"] + [a for o in TINY for a in ("--set", o)]  # fmt: skip
    assert main(args) == 0
    for name in ("last.pth", "best.pth", "metrics.jsonl", "metrics.csv"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "loss" in r] == [1, 2] and "grad_norm" in rows[0]
    assert any("val_segm_AP" in r for r in rows)
    state = torch.load(out / "last.pth", weights_only=False)
    assert state["iteration"] == 2 and tuple(state["config"]["class_names"]) == CLASS_NAMES
    capsys.readouterr()

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    bad = [
        (["--data", str(tmp_path / "nope.json")], "training annotation file not found"),
        (["--val-data", str(synth["val_json"]), "--val-images", str(tmp_path / "nodir")], "validation image"),
        (["--set", "roi.batch_size_per_image=many"], "expected an int"),
        (["--freeze-stages", "7"], "freeze-stages must be in 0..4"),
        (["--amp", "fp16", "--device", "cpu"], "needs a CUDA device"),
        ([], "pass --resume"),  # `out` already has last.pth
        (["--resume", str(tmp_path / "missing.pth")], "checkpoint not found"),
        (["--resume", str(junk)], "cannot read the checkpoint"),
    ]
    for extra, message in bad:
        if message not in ("pass --resume", "checkpoint not found", "cannot read the checkpoint"):
            extra = ["--output", str(tmp_path / "other")] + extra
        rc = main(args + extra)
        err = capsys.readouterr().err
        assert rc == 1 and message in err and err.count("\n") == 1, (extra, err)
