"""Training metrics: ``metrics.jsonl`` (one JSON object a line), ``metrics.csv``, ``curves.png`` (losses, learning
rate and validation AP, redrawn at each evaluation and at the end; needs matplotlib) and, when the package is
importable, TensorBoard event files (``tensorboard/``), all in the run folder. Both are in the ``train`` extra.

A resumed run first drops the rows logged after the checkpoint it resumes from (the killed run may have
gone further than its last checkpoint), so the files read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends metric records; each record has an ``iteration`` and any number of scalar fields."""

    def __init__(self, run_dir: str | Path, resume_iteration: int | None = None,
                 tensorboard: bool = True, curves: bool = True, announce: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.csv_path = self.run_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if resume_iteration is not None and self.jsonl_path.exists():
            self.rows = [r for r in _read_jsonl(self.jsonl_path) if r.get("iteration", 0) <= resume_iteration]
        self.fields: list[str] = []
        for row in self.rows:
            self._add_fields(row)
        self._rewrite()
        self.writer = _tensorboard_writer(self.run_dir / "tensorboard") if tensorboard else None
        self.curves_path: Path | None = self.run_dir / "curves.png" if curves else None
        if announce:
            print(self.describe(), flush=True)

    def describe(self) -> str:
        """The start-up line that says where the logs go."""
        parts = [f"isseg train: logs in {self.run_dir}/: metrics.jsonl, metrics.csv"]
        if self.curves_path is not None:
            parts.append("curves.png (at each evaluation)" if _has_matplotlib() else
                         "no curves.png (matplotlib missing: pip install 'isseg[train]')")
        if self.writer is not None:
            parts.append(f"TensorBoard: tensorboard --logdir {self.run_dir / 'tensorboard'}")
        else:
            parts.append("no TensorBoard events (pip install 'isseg[train]')")
        return ", ".join(parts)

    def log(self, record: dict[str, Any]) -> None:
        row = {k: _plain(v) for k, v in record.items()}
        self.rows.append(row)
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._add_fields(row):
            self._rewrite_csv()
        else:
            with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=self.fields).writerow(row)
        if self.writer is not None:
            step = int(row.get("iteration", 0))
            for key, value in row.items():
                if key not in ("iteration", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()
        if any(k.startswith("val_") for k in row):
            self.plot_curves()

    def plot_curves(self) -> Path | None:
        """Redraw ``curves.png`` from all rows so far (atomically); None without matplotlib or rows."""
        if self.curves_path is None or not self.rows or not _has_matplotlib():
            return None
        try:
            return plot_curves(self.rows, self.curves_path)
        except Exception as exc:  # a plotting problem must never stop a training run
            warnings.warn(f"{self.curves_path}: not drawn: {exc}", stacklevel=2)
            return None

    def close(self) -> None:
        self.plot_curves()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _add_fields(self, row: dict[str, Any]) -> bool:
        new = [k for k in row if k not in self.fields]
        self.fields.extend(new)
        return bool(new)

    def _rewrite(self) -> None:
        with open(self.jsonl_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.rows)
        self._rewrite_csv()

    def _rewrite_csv(self) -> None:
        # The header is the union of all keys seen so far (evaluation rows add AP columns), so the file
        # is rewritten whenever a new key appears; that happens a handful of times per run.
        with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(self.rows)


def _plain(value: Any) -> Any:
    """Tensors / NumPy scalars to Python numbers; NaN and inf to None (JSON has no such numbers)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return rows


def _tensorboard_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: the jsonl/csv files are the record
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_curves(rows: list[dict[str, Any]], path: Path) -> Path:
    """Three panels over iterations: the losses (total and each term), the learning rate, and validation AP
    (mask and box, AP and AP50)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(r["iteration"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "iteration" in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    keys = {k for r in rows for k in r}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key in ["loss"] + sorted(k for k in keys if k.startswith("loss_")):
        x, y = series(key)
        if x:
            axes[0].plot(x, y, label=key, linewidth=2.0 if key == "loss" else 1.0)
    axes[0].set_title("training losses")
    x, y = series("lr")
    axes[1].plot(x, y, color="tab:purple")
    axes[1].set_title("learning rate")
    styles = (("val_segm_AP", "-o"), ("val_bbox_AP", "-s"), ("val_segm_AP50", "--o"), ("val_bbox_AP50", "--s"))
    for key, style in styles:
        x, y = series(key)
        if x:
            axes[2].plot(x, y, style, markersize=3, label=key.replace("val_", "").replace("segm", "mask")
                         .replace("bbox", "box"))
    axes[2].set_title("validation AP")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    from isseg.atomic import atomic_write

    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
    finally:
        plt.close(fig)
