"""The benchmark loop: plan the rows, then train, measure and write each one (a row
finished by an earlier run with the same --out is read back instead), then the run's
analyses and reports."""

import dataclasses
import json
import os
import time

import keras
import tensorflow as tf
from tqdm.auto import tqdm

from mmkeras import distribute
from mmkeras.bench import analyses, plots, report
from mmkeras.bench.config import DEFAULT_BATCH_SIZE, QUICK
from mmkeras.bench.metrics import Measured, measure_row
from mmkeras.bench.plan import plan_rows, select_rows
from mmkeras.bench.pretrain import pretrain_for_rows
from mmkeras.bench.strategies import STRATEGIES
from mmkeras.bench.warm_starts import WarmStarts, source_name
from mmkeras.data import load_dataset, make_datasets, take_subset
from mmkeras.manifest_options import check_manifest_options


def load_data(spec, seed=0, quick=False, options=None):
    """The data of --data `spec` (see mmkeras.data.load_dataset; `options`: a manifest's,
    refused for data that does not read them); quick: QUICK's subset."""
    options = dict(options or {})
    check_manifest_options(spec, options)
    data = load_dataset(spec, seed=seed, **options)
    return take_subset(data, QUICK["n_train"], QUICK["n_test"], seed) if quick else data


def run_row(plan, ds, config, warm):
    """Train and measure the row `plan` (a plan.RowPlan); returns (its results dict, the model)."""
    keras.utils.set_random_seed(config.seed)
    trained = STRATEGIES[plan.strategy](plan, ds, config, warm)
    row = {"name": plan.name, "family": plan.family, **measure_row(Measured(trained, ds, config)),
           "curve": trained.curve.curve,
           "history": {k: [float(v) for v in vs] for k, vs in trained.history.items()}}
    if plan.warm_start is not None:  # modality -> the row (or file) its branch came from
        row["warm_start"] = {m: source_name(p) for m, p in plan.warm_start.items()}
    return row, trained.model


def run(config):
    """Run the benchmark; writes OUT/results.json, results.md, rows/, plots; returns the results."""
    # First: multi-worker collectives and device lists must be set before TF starts its devices.
    strategy = distribute.get_strategy(config.strategy)
    if config.quick and config.epochs is None:
        config = dataclasses.replace(config, epochs=QUICK["epochs"])
    os.makedirs(os.path.join(config.out, "rows"), exist_ok=True)
    if config.seed is not None:
        tf.config.experimental.enable_op_determinism()  # same seed, same CPU: same metrics
    data = load_data(config.data, config.seed, config.quick, config.data_options())
    ds = make_datasets(data, batch_size=config.batch_size or DEFAULT_BATCH_SIZE, vocab_size=config.vocab_size,
                       sequence_length=config.sequence_length, seed=config.seed)
    names = select_rows(config.models)
    pretrained, pretrain_info = pretrain_for_rows(config, ds, names)
    warm = WarmStarts.for_config(config, pretrained)
    plans = plan_rows(names, config, warm)  # before any training: a plan that cannot run fails now
    rows, export = [], report.BestExport()
    for plan in tqdm(plans, desc="benchmark", unit="model"):
        path = os.path.join(config.out, "rows", f"{plan.name}.json")
        if os.path.isfile(path):  # finished in an earlier run: resume
            with open(path, encoding="utf-8") as f:
                row, model = json.load(f), None
        else:
            print(f"\n== {plan.name}")
            start = time.perf_counter()
            with strategy.scope():  # models, optimizers and metrics belong to the strategy
                row, model = run_row(plan, ds, config, warm)
            row["wall_seconds"] = time.perf_counter() - start  # training + every measurement
            if row.get("degenerate"):
                print(f"WARNING: row {plan.name} is degenerate: {row['degenerate']}")
            if plan.saved_model:
                model.save(plan.saved_model)  # later rows (and resumed runs) start from it
            report.write_json(path, row)
        rows.append(row)
        saved = plan.saved_model if plan.saved_model and os.path.isfile(plan.saved_model) else None
        for modality in plan.branches if saved else ():
            warm.record(modality, saved, row["test_accuracy"])
        if config.export and plan.strategy != "recipe":
            export.offer(row, model if model is not None else saved)
    results = {"dataset": data.name, "data": report.data_record(config.data, data),
               "class_weight": config.class_weight, "num_classes": ds.num_classes, "n_train": ds.size("train"),
               "n_test": ds.size("test"), "image_shape": list(ds.image_shape),
               "class_names": ds.class_names, "seed": config.seed, "models": rows,
               "robustness_samples": min(config.robustness_samples, ds.size("test")),
               "time_to_accuracy": analyses.time_to_accuracy(rows, config.default_fused, pretrain_info),
               "speedup": analyses.speedups(rows), "pretrain": pretrain_info,
               "export": export.export(ds, data, config.out) if config.export else None,
               # The whole run's cost, resumed parts included: rows, their measurements, pretraining.
               "wall_seconds": None if any("wall_seconds" not in r for r in rows)
               else sum(r["wall_seconds"] for r in rows) + sum(p["total_seconds"] for p in pretrain_info)}
    report.write_json(os.path.join(config.out, "results.json"), results)
    with open(os.path.join(config.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(report.results_markdown(results))
    plots.plot_all(results, config.out)
    return results
