"""Run-level analyses over the finished rows: time to the recipe's accuracy, pipeline speedups."""

from mmkeras.bench import recipe
from mmkeras.bench.config import DEFAULT_FUSED
from mmkeras.bench.plan import RECIPE_PREFIX
from mmkeras.bench.warm_starts import source_name

# The reference every time is measured against: the seed recipe's fused row.
REFERENCE_ROW = RECIPE_PREFIX + "seed_concat"


def budget_cut(row):
    """"E of S epochs" when the time budget gave `row` fewer epochs than its schedule, by its
    plan or by its deadline's stop (None: not cut). A comparison with such a row measures the
    budget, not the pipeline."""
    scheduled, planned = row.get("scheduled_epochs"), row.get("planned_epochs")
    if scheduled is None or planned is None:
        return None
    ran = min(planned, row.get("stopped_by_deadline_after") or planned)
    return f"{ran} of {scheduled} epochs" if ran < scheduled else None


def _cuts(*rows):
    """{row name: "E of S epochs"} for the rows among `rows` that the budget cut."""
    return {r["name"]: cut for r in rows if (cut := budget_cut(r))}


def time_to_accuracy(rows, default_fused=DEFAULT_FUSED, pretrained=()):
    """Seconds each row took to reach the seed recipe's final test accuracy (None: never).

    A warm-started row's own seconds leave out the training of the unimodal rows it
    started from; `models_with_warm_start` adds them back (the honest total). The
    `default_fused` entry is the headline: that model against the recipe's training time.
    """
    ref = next((r for r in rows if r["name"] == REFERENCE_ROW), None)
    if ref is None:
        return {}
    target, by_name = ref["test_accuracy"], {r["name"]: r for r in rows}
    by_name.update({source_name(p["path"]): p for p in pretrained})
    out = {"target": target, "recipe_seconds": ref["train_seconds"], "models": {},
           "models_with_warm_start": {}}
    if cut := budget_cut(ref):  # a shortened recipe sets a lower target in fewer seconds
        out["reference_cut_by_budget"] = cut
    for r in rows:
        hit = next((c["seconds"] for c in r.get("curve", []) if c["test_accuracy"] >= target), None)
        out["models"][r["name"]] = hit
        sources = (r.get("warm_start") or {}).values()
        if hit is not None and sources:
            hit += sum(by_name[s]["train_seconds"] if s in by_name else float("nan") for s in sources)
        out["models_with_warm_start"][r["name"]] = hit
    seconds = out["models_with_warm_start"].get(default_fused)
    if any(r["name"] == default_fused for r in rows):
        out["default_fused"] = {
            "name": default_fused, "seconds": seconds,
            "fraction_of_recipe_seconds": None if seconds is None else seconds / ref["train_seconds"],
            "final_test_accuracy": by_name[default_fused]["test_accuracy"]}
    return out


def speedups(rows):
    """Each seed model's package-pipeline row against its recipe row: the samples/s ratio
    over the whole fit and (where both rows have it) of their median epochs."""
    by_name = {r["name"]: r for r in rows}
    out = {}
    for n in recipe.SEED_MODELS:
        if n not in by_name or RECIPE_PREFIX + n not in by_name:
            continue
        ours, ref = by_name[n], by_name[RECIPE_PREFIX + n]
        out[n] = {"samples_per_second_ratio": ours["train_samples_per_second"] / ref["train_samples_per_second"],
                  "accuracy_delta": ours["test_accuracy"] - ref["test_accuracy"]}
        if cuts := _cuts(ours, ref):
            out[n]["cut_by_budget"] = cuts
        key = "median_epoch_samples_per_second"
        if key in ours and key in ref:
            out[n]["median_epoch_ratio"] = ours[key] / ref[key]
    return out
