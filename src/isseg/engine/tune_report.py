"""The files ``isseg tune`` keeps up to date in its output folder after each trial: ``trials.csv`` and ``trials.md``
(one row per trial: state, values (``weight_decay``: AdamW's, empty for SGD, which keeps the recipe's), training
seed, final validation mask AP of a completed trial, the last one a trial reported, box AP, iterations, minutes),
``trials.png`` (each trial's validation mask AP against the images it had seen, pruned trials dashed, and the
final AP of each trial) and ``best_recipe.yaml`` (:func:`isseg.engine.tune.save_best`)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from isseg.atomic import atomic_write
from isseg.engine.tune_space import learning_rate

COLUMNS = ("trial", "state", "optimizer", "lr", "weight_decay", "batch_size", "horizontal_flip", "color_jitter",
           "scale_jitter", "positive_fraction", "seed",
           "mask_AP", "last_val_mask_AP", "box_AP", "iterations", "minutes", "note")


def real_trials(study: Any) -> list[Any]:
    """The study's trials, less the surplus ones (with ``--jobs``, a process that found nothing left to run)."""
    return [t for t in study.trials if not t.user_attrs.get("surplus")]


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial of the study (see :data:`COLUMNS`)."""
    rows = []
    for t in real_trials(study):
        p, a = t.params, t.user_attrs
        notes = ["the base recipe" if a.get("base_recipe") else "",
                 _anchor_note(a.get("anchor"), p),
                 f"retry of {a['retry_of']}" if "retry_of" in a else "",
                 f"confirms trial {a['confirm_of']}" if "confirm_of" in a else "",
                 "interrupted" if a.get("interrupted") else "", a.get("note", "")]
        note = "; ".join(n for n in notes if n)
        rows.append({
            "trial": t.number, "state": t.state.name.lower(), "optimizer": p.get("optimizer", "sgd"),
            "lr": learning_rate(p), "weight_decay": p.get("adamw_weight_decay"), "batch_size": p.get("batch_size"),
            "horizontal_flip": p.get("horizontal_flip"), "color_jitter": p.get("color_jitter"),
            "scale_jitter": p.get("scale_jitter"), "positive_fraction": p.get("positive_fraction"),
            "seed": a.get("seed"),
            "mask_AP": t.value if t.state.name == "COMPLETE" else None,
            "last_val_mask_AP": _last(t), "box_AP": a.get("box_AP"),
            "iterations": a.get("iterations"), "minutes": a.get("minutes"), "note": note,
        })  # fmt: skip
    return rows


def _anchor_note(anchor: Any, params: dict[str, Any]) -> str:
    """An anchor trial's note: ``"adamw's starting point"`` (older studies stored ``True`` for these), ``"the base
    recipe with positive fraction 0.5"``."""
    if not anchor:
        return ""
    if anchor is True or anchor == params.get("optimizer"):
        return f"{params.get('optimizer')}'s starting point"
    return f"the base recipe with {anchor}"


def groups(study: Any) -> list[dict[str, Any]]:
    """The runs of each configuration: a search trial with its confirmation runs (other seeds) and the retries of
    either. Each: ``trial`` (the search trial's number), ``params``, ``base_recipe``, ``values`` (the completed
    runs' validation mask AP) and ``mask_AP`` (their mean; None without one)."""
    by_number = {t.number: t for t in study.trials}

    def origin(t: Any) -> int:
        while True:
            if "confirm_of" in t.user_attrs:
                return int(t.user_attrs["confirm_of"])
            if "retry_of" not in t.user_attrs:
                return int(t.number)
            t = by_number[int(t.user_attrs["retry_of"])]

    found: dict[int, dict[str, Any]] = {}
    for t in real_trials(study):
        key = origin(t)
        g = found.setdefault(key, {"trial": key, "params": dict(t.params), "base_recipe": False, "values": []})
        g["base_recipe"] = g["base_recipe"] or bool(t.user_attrs.get("base_recipe"))
        if t.state.name == "COMPLETE":
            g["values"].append(float(t.value))
    for g in found.values():
        g["mask_AP"] = sum(g["values"]) / len(g["values"]) if g["values"] else None
    return list(found.values())


def best_group(study: Any) -> dict[str, Any] | None:
    """The configuration with the highest mean validation mask AP among those with the most completed runs (after
    the confirmation runs: the confirmed ones, so a single lucky run never wins against a mean); None when no run
    completed. A tie goes to the base recipe."""
    done = [g for g in groups(study) if g["values"]]
    if not done:
        return None
    most = max(len(g["values"]) for g in done)
    return max((g for g in done if len(g["values"]) == most), key=lambda g: (g["mask_AP"], g["base_recipe"]))


def _last(trial: Any) -> float | None:
    """The last validation mask AP a trial reported (where a pruned trial stopped)."""
    if not trial.intermediate_values:
        return None
    return trial.intermediate_values[max(trial.intermediate_values)]


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(study: Any, path: Path) -> Path:
    """``trials.png``: validation mask AP over the images seen, per trial, and each trial's final AP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    trials = real_trials(study)
    for t in trials:
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        style = "-" if t.state.name == "COMPLETE" else "--"
        left.plot(steps, [t.intermediate_values[s] for s in steps], style, marker="o", label=f"trial {t.number}")
    left.set_xlabel("training images seen")
    left.set_ylabel("validation mask AP")
    left.set_title("trials (dashed: pruned or stopped)")
    if any(t.intermediate_values for t in trials):
        left.legend(fontsize=7)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    labels = [f"{t.user_attrs['confirm_of']} s{t.user_attrs.get('seed')}" if "confirm_of" in t.user_attrs
              else str(t.number) for t in done]
    colours = ["tab:green" if "confirm_of" in t.user_attrs else "tab:orange" if t.user_attrs.get("base_recipe")
               else "tab:blue" for t in done]
    right.bar(labels, [t.value for t in done], color=colours)
    right.set_xlabel("completed trial (orange: the base recipe; green: 'N sK' reruns trial N with seed K)")
    right.set_ylabel("final validation mask AP")
    fig.tight_layout()

    def save(f: Any) -> None:
        fig.savefig(f, format="png", dpi=100)

    atomic_write(path, save)
    plt.close(fig)
    return path


def write_reports(study: Any, output: str | Path) -> dict[str, Any]:
    """Rewrite the table and the plot in ``output``; returns their paths and ``best`` (the best completed trial's
    number, values, mean AP and number of runs, or None: :func:`best_group`). The best recipe is
    :func:`isseg.engine.tune.save_best`'s."""
    out = Path(output)
    rows = trial_rows(study)

    def write_csv(f: Any) -> None:
        import io

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
        f.write(text.getvalue().encode("utf-8"))

    files: dict[str, Any] = {"csv": atomic_write(out / "trials.csv", write_csv),
                             "markdown": atomic_write(out / "trials.md", markdown(rows)),
                             "plot": plot(study, out / "trials.png")}
    best = best_group(study)
    files["best"] = None if best is None else {"trial": best["trial"], "mask_AP": best["mask_AP"],
                                               "runs": len(best["values"]), "base_recipe": best["base_recipe"],
                                               **best["params"]}
    return files
