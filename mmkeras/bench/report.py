"""Benchmark outputs: results.json and rows/*.json, results.md, and the best row's export.
(The PNG plots: plots.py.)"""

import json
import os

import keras
import numpy as np

from mmkeras.bench import analyses, metrics
from mmkeras.data import ManifestData
from mmkeras.export import export_model


def write_json(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated results file


def data_record(spec, data):
    """The "data" record of results.json: source, n_rows, bad_rows [{"line", "column",
    "reason"}], skipped, blanked (manifest lines), class_counts (split -> class -> rows, of
    the rows this run uses: --quick's subset), class_names and image_size. A manifest
    records all of it (ManifestData.summary); other data what applies."""
    splits = {s: getattr(data, s, None) for s in ("train", "validation", "test")}
    splits = {s: part for s, part in splits.items() if part is not None}
    record = data.summary() if isinstance(data, ManifestData) else {
        "source": spec, "n_rows": sum(len(part) for part in splits.values()),
        "bad_rows": [], "skipped": [], "blanked": []}
    names = [str(n) for n in data.class_names]
    record["class_counts"] = {s: {names[c]: int(n) for c, n in zip(*np.unique(part.label, return_counts=True))}
                              for s, part in splits.items()}
    return {**record, "class_names": names, "image_size": list(data.image_shape[:2])}


def data_line(data, class_weight=None, shown=10):
    """One results.md line: where the data came from, what was skipped or blanked (the first
    `shown` lines of each), the smallest class in train, and the class weighting."""
    parts = [f"**Data**: {data['source']}, {data['n_rows']} rows"]
    for key, what in (("skipped", "skipped"), ("blanked", "blanked (image missing)")):
        if data.get(key):
            lines = ", ".join(str(line) for line in data[key][:shown]) + (" ..." if len(data[key]) > shown else "")
            parts.append(f"{len(data[key])} {what}: lines {lines}")
    train = data.get("class_counts", {}).get("train")
    if train:
        smallest = min(train, key=train.get)
        parts.append(f"smallest class in train: {smallest} ({train[smallest]} of {sum(train.values())})")
    parts.append(f"class weight: {class_weight or 'none'}")
    return "; ".join(parts)


def results_markdown(results):
    """The results table, best row first: one column per titled metric (metrics.METRICS)."""
    columns = metrics.columns()
    head = "| model | family | " + " | ".join(m.title for m in columns) + " |"
    lines = [f"# {results['dataset']}: {results['n_train']} train / {results['n_test']} test, "
             f"{results['num_classes']} classes, images {tuple(results['image_shape'])}", "",
             head, "|" + "---|" * (len(columns) + 2)]
    for row in sorted(results["models"], key=lambda m: -m["test_accuracy"]):
        lines.append(f"| {row['name']} | {row['family']} | " + " | ".join(m.cell(row) for m in columns) + " |")
    if results.get("data"):
        lines += ["", data_line(results["data"], results.get("class_weight"))]
    budget = results.get("budget")
    if budget:
        lines += ["", f"**Time budget**: {budget['minutes']:.1f} min, spent {budget['spent_seconds'] / 60:.1f} min"
                  + "".join(f"; measurement reduced: {r}" for r in budget.get("reduced_measurements", []))]
        lines += [f"**Left out** {name}: {why}" for name, why in budget.get("skipped", {}).items()]
    for key, label in (("time_to_accuracy", "Time to accuracy"), ("speedup", "Pipeline vs seed recipe")):
        if results.get(key):
            lines += ["", f"**{label}**: `{json.dumps(results[key])}`" + _cut_warning(key, results[key])]
    return "\n".join(lines) + "\n"


def _cut_warning(key, analysis):
    """A sentence after an analysis whose rows the time budget cut (analyses.budget_cut)."""
    if key == "time_to_accuracy":
        cuts = {analyses.REFERENCE_ROW: analysis["reference_cut_by_budget"]} \
            if "reference_cut_by_budget" in analysis else {}
    else:
        cuts = {n: c for pair in analysis.values() for n, c in pair.get("cut_by_budget", {}).items()}
    if not cuts:
        return ""
    return (" NOT COMPARABLE: the time budget cut " + ", ".join(f"{n} to {c}" for n, c in cuts.items())
            + "; rerun with a larger --time-budget (or none) to compare.")


class BestExport:
    """--export: follows the rows as they finish and exports the most accurate one.

    A row resumed from an earlier run has a model only if it saved one (unimodal rows);
    when the best row has none, the best row that has one is exported, and the results say so.
    """

    def __init__(self):
        self.best = self.best_available = None  # (row, model or .keras path or None)

    def offer(self, row, model):
        if self.best is None or row["test_accuracy"] > self.best[0]["test_accuracy"]:
            self.best = (row, model)
        if model is not None and (self.best_available is None
                                  or row["test_accuracy"] > self.best_available[0]["test_accuracy"]):
            self.best_available = (row, model)

    def export(self, ds, data, out):
        """Export to OUT/export/<row>; returns what was exported (None: nothing to export)."""
        if self.best is None:
            return None
        if self.best_available is None:
            print("--export: no row of this run has a model to export (every finished row was "
                  "resumed from an earlier run, and fused rows and ensembles are not saved): rerun "
                  "with a fresh --out to export.")
            return None
        row, model = self.best_available
        note = None
        if row is not self.best[0]:
            note = (f"the best row, {self.best[0]['name']} ({self.best[0]['test_accuracy']:.4f}), was resumed "
                    "from an earlier run without a saved model; exported the best row that has one")
            print(f"--export: {note}.")
        if isinstance(model, str):
            model = keras.saving.load_model(model)
        path = os.path.join(out, "export", row["name"])
        export_model(model, path, vectorizer=ds.vectorizer, class_names=ds.class_names, dataset=data.name,
                     metrics={"test_accuracy": row["test_accuracy"]}, overwrite=True)
        return {"name": row["name"], "path": path, "test_accuracy": row["test_accuracy"], "note": note}
