"""Training metrics: ``metrics.jsonl`` (one JSON object a line), ``metrics.csv`` and, when the package is
importable, TensorBoard event files, all in the run folder.

A resumed run first drops the rows logged after the checkpoint it resumes from (the killed run may have
gone further than its last checkpoint), so the files read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends metric records; each record has an ``iteration`` and any number of scalar fields."""

    def __init__(self, run_dir: str | Path, resume_iteration: int | None = None,
                 tensorboard: bool = True) -> None:
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

    def close(self) -> None:
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
