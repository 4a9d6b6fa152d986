"""The benchmark loop: plan the rows, then train, measure and write each one (a row
finished by an earlier run with the same --out is read back instead), then the run's
analyses and reports. With --time-budget every row to train is probed first and each row's
epochs are cut to its share of what is left (budget.RunBudget). The console says, per row,
what it trains, for how long, and (with a budget) when the whole run should end."""

import dataclasses
import json
import os
import time

import keras
import tensorflow as tf
from tqdm.auto import tqdm

from mmkeras import distribute, prediction_memo
from mmkeras.bench import analyses, plots, report
from mmkeras.bench import budget as budget_module
from mmkeras.bench.budget import RunBudget
from mmkeras.bench.config import DEFAULT_BATCH_SIZE, QUICK
from mmkeras.bench.metrics import Measured, measure_row
from mmkeras.bench.plan import describe, plan_rows, select_rows
from mmkeras.bench.pretrain import pretrain_for_rows
from mmkeras.bench.strategies import STRATEGIES
from mmkeras.bench.warm_starts import WarmStarts, source_name
from mmkeras.data import load_dataset, make_datasets, take_subset
from mmkeras.manifest_options import check_manifest_options
from mmkeras.prediction_memo import PredictionMemo


def load_data(spec, seed=0, quick=False, options=None):
    """The data of --data `spec` (see mmkeras.data.load_dataset; `options`: a manifest's,
    refused for data that does not read them); quick: QUICK's subset."""
    options = dict(options or {})
    check_manifest_options(spec, options)
    data = load_dataset(spec, seed=seed, **options)
    return take_subset(data, QUICK["n_train"], QUICK["n_test"], seed) if quick else data


def run_row(plan, ds, config, warm, budget=None):
    """Train and measure the row `plan` (a plan.RowPlan); returns (its results dict, the model).
    budget: a budget.RunBudget, which may measure less (budget.Measurements)."""
    keras.utils.set_random_seed(config.seed)
    trained = STRATEGIES[plan.strategy](plan, ds, config if budget is None else budget.train_config(config, plan), warm)
    measured = Measured(trained, ds, config) if budget is None else budget.measured(trained, ds, config, plan)
    row = {"name": plan.name, "family": plan.family, **measure_row(measured),
           "curve": trained.curve.curve,
           # The schedule: epochs planned, and the epoch whose weights early stopping kept.
           **{k: trained.stats[k] for k in ("planned_epochs", "best_epoch", "schedule_shortened_to", "optimizer")
              if k in trained.stats},
           "history": {k: [float(v) for v in vs] for k, vs in trained.history.items()}}
    if plan.warm_start is not None:  # modality -> the row (or file) its branch came from
        row["warm_start"] = {m: source_name(p) for m, p in plan.warm_start.items()}
    return row, trained.model


def _finished_row(out, name):
    """The results of row `name` that an earlier run with the same --out wrote, or None."""
    path = os.path.join(out, "rows", f"{name}.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _clock(seconds_from_now):
    return time.strftime("%H:%M", time.localtime(time.time() + seconds_from_now))


def _minutes(seconds):
    return f"{seconds / 60:.1f} min"


def print_plan(plans, finished, ds, budget):
    """The plan, before anything trains: each row, what it trains, its epochs x batch and
    (with a budget) its share of the seconds; rows an earlier run finished are reused."""
    to_run = [p.name for p in plans if finished[p.name] is None]
    head = f"Plan: {len(plans)} rows on {ds.size('train'):,} training pairs, images {ds.image_shape[0]}x{ds.image_shape[1]}"
    if budget is not None:
        epochs, over, seconds, skipped = budget.share(to_run)
        head += (f"; budget {_minutes(budget.seconds)}, {_minutes(budget.left())} left after probing "
                 f"{len(budget.probes)} kinds of row ({budget.probe_seconds:.0f} s) and keeping "
                 f"{budget_module.REPORT_SECONDS:.0f} s for the report")
    print(head)
    for i, plan in enumerate(plans, 1):
        if finished[plan.name] is not None:
            print(f"  {i:>2}. {plan.name}: reused from an earlier run ({_reused(finished[plan.name])})")
            continue
        line = f"  {i:>2}. {describe(plan, ds.size('train'))}"
        if budget is not None and plan.name in skipped:
            line += (f"; LEFT OUT: the rows that later rows borrow would get less than {budget.floor:.0%} of their "
                     "epochs" if budget.floor else "; LEFT OUT: even at their fewest epochs the rows do not fit the budget")
        elif budget is not None:
            cut = (f", cut from {plan.epochs}" if epochs[plan.name] < plan.epochs else
                   f", extended from {plan.epochs} into the budget's room" if epochs[plan.name] > plan.epochs else "")
            first = ", served first (later rows borrow its model)" if budget.models[plan.name].borrowed else ""
            line += f"; planned {epochs[plan.name]} epochs{cut}{first}, about {_minutes(seconds[plan.name])}"
        print(line)
    if budget is not None:
        total = sum(seconds.values())
        for reduced in budget.measurements.reductions(budget.full, ds.size("test")):
            print(f"  Measurement reduced to fit the budget: {reduced}")
        print(f"Estimated finish: {_clock(total)} ({_minutes(total)} from now)"
              + ("; OVER BUDGET even at the fewest epochs per row: the run will overrun" if over else ""))


def _reused(row):
    spent = row.get("spent_seconds", row.get("wall_seconds"))
    return (f"test accuracy {row['test_accuracy']:.4f}, {row.get('epochs')} epochs"
            + ("" if spent is None else f", {_minutes(spent)} then"))


def _train_row(plan, to_run, ds, config, warm, strategy, budget, position, started):
    """Train and measure `plan`, its epochs cut to its share of the budget (if any);
    `to_run`: it and the rows after it that still train. Returns (row, model)."""
    when = f"run so far {_minutes(time.perf_counter() - started)}"
    if budget is not None:
        name, (plan, left) = plan.name, budget.start_row(plan, to_run)
        if plan is None:
            print(f"\n== [{position}] {name}: LEFT OUT, {budget.skipped[name]}; run ends about {_clock(left)}")
            return None, None
        when = f"planned {_minutes(budget.rows[plan.name]['planned_seconds'])}; run ends about {_clock(left)}"
    print(f"\n== [{position}] {describe(plan, ds.size('train'))}; {when}")
    start = time.perf_counter()
    with strategy.scope():  # models, optimizers and metrics belong to the strategy
        row, model = run_row(plan, ds, config, warm, budget)
    row["wall_seconds"] = row["spent_seconds"] = time.perf_counter() - start  # training + every measurement
    row["planned_seconds"] = None if budget is None else budget.rows[plan.name]["planned_seconds"]
    if budget is not None:
        # Its schedule's epochs beside the budget's share (planned_epochs): analyses.budget_cut.
        row["scheduled_epochs"] = budget.rows[plan.name]["scheduled_epochs"]
        budget.finish_row(plan.name, row["spent_seconds"], row.get("epochs") or 0)
        if budget.rows[plan.name].get("stopped_by_deadline_after") is not None:
            row["stopped_by_deadline_after"] = budget.rows[plan.name]["stopped_by_deadline_after"]
    print(f"== {plan.name}: test accuracy {row['test_accuracy']:.4f} after {row.get('epochs')} epochs, "
          f"{_minutes(row['spent_seconds'])}" + ("" if budget is None else f" (planned {_minutes(row['planned_seconds'])})"))
    return row, model


def _run_rows(plans, finished, ds, config, warm, strategy, budget, started, rows, export):
    """Train (or read back) and measure every row in order, appending to `rows`; the models
    later rows borrow are saved as they finish."""
    for i, plan in enumerate(tqdm(plans, desc="benchmark", unit="model")):
        path = os.path.join(config.out, "rows", f"{plan.name}.json")
        row, model = finished[plan.name], None
        if row is not None:  # finished in an earlier run: resume
            print(f"\n== [{i + 1}/{len(plans)}] {plan.name}: reusing {path} ({_reused(row)})")
        else:
            row, model = _train_row(plan, [p.name for p in plans[i:] if finished[p.name] is None], ds, config,
                                    warm, strategy, budget, f"{i + 1}/{len(plans)}", started)
            if row is None:  # left out to keep the budget: no results, nothing written
                continue
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


def run(config):
    """Run the benchmark; writes OUT/results.json, results.md, rows/, plots; returns the results."""
    started = time.perf_counter()  # the time budget counts everything from here
    if config.time_budget is not None and not config.time_budget > 0:
        raise ValueError("--time-budget must be a number of minutes > 0 (None: no limit). "
                         f"Received time_budget={config.time_budget!r}.")
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
    # Before any training: a plan that cannot run fails now.
    plans = plan_rows(names, config, warm, n_train=ds.size("train"), image_shape=ds.image_shape,
                      validation=ds.size("validation") > 0)
    finished = {p.name: _finished_row(config.out, p.name) for p in plans}
    budget = None
    if config.time_budget is not None:
        with strategy.scope():
            budget = RunBudget.probe(config.time_budget, started, [p for p in plans if finished[p.name] is None],
                                     ds, config)
    print_plan(plans, finished, ds, budget)
    rows, export = [], report.BestExport()
    with prediction_memo.active(PredictionMemo()) as memo:
        _run_rows(plans, finished, ds, config, warm, strategy, budget, started, rows, export)
    print(f"Prediction memo: {memo.hits} model predictions answered from memory, {memo.misses} computed")
    results = {"dataset": data.name, "data": report.data_record(config.data, data),
               "class_weight": config.class_weight, "num_classes": ds.num_classes, "n_train": ds.size("train"),
               "n_test": ds.size("test"), "image_shape": list(ds.image_shape),
               "class_names": ds.class_names, "seed": config.seed, "models": rows,
               "robustness_samples": min(config.robustness_samples, ds.size("test")) if budget is None
               else budget.robustness_samples(),
               "time_to_accuracy": analyses.time_to_accuracy(rows, config.default_fused, pretrain_info),
               "speedup": analyses.speedups(rows), "pretrain": pretrain_info,
               "export": export.export(ds, data, config.out) if config.export else None,
               # The whole run's cost, resumed parts included: rows, their measurements, pretraining.
               "wall_seconds": None if any("wall_seconds" not in r for r in rows)
               else sum(r["wall_seconds"] for r in rows) + sum(p["total_seconds"] for p in pretrain_info),
               "budget": None if budget is None else budget.record(),
               "prediction_memo": {"hits": memo.hits, "misses": memo.misses}}
    report.write_json(os.path.join(config.out, "results.json"), results)
    with open(os.path.join(config.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(report.results_markdown(results))
    plots.plot_all(results, config.out)
    return results
