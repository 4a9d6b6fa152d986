"""--time-budget: sharing a run's seconds among its rows (`share_budget`), and measuring
what a row costs before it trains (`probe_row`).

Each row needs `fixed_seconds` (building, tracing, every measurement) plus
`epoch_seconds` per epoch. When the rows' needs exceed the budget, every row keeps the
same fraction of its planned epochs (the budget is shared by need), at least
`min_epochs`: epochs are cut, rows never. The runner shares again before every row with
what is left, its estimates corrected by what the finished rows really cost.
"""

import dataclasses
import time

import numpy as np

from mmkeras import training

# Train steps timed per row (after one untimed step that traces the graph).
PROBE_STEPS = 3
# Per row, beyond training: the test predictions, the robustness passes (five perturbed;
# the clean one reuses the test predictions), Shapley modality shares (four passes) and the timings, in units of one
# prediction of the robustness subset, and of the whole test set.
MEASURE_SUBSET_PASSES = 11
MEASURE_TEST_PASSES = 2


@dataclasses.dataclass(frozen=True)
class RowCost:
    """What one row is expected to cost: `fixed_seconds` + epochs x `epoch_seconds`."""

    name: str
    epochs: int  # planned without a budget (the schedule's, or the flags')
    epoch_seconds: float = 0.0
    fixed_seconds: float = 0.0
    min_epochs: int = 1

    def seconds(self, epochs):
        return self.fixed_seconds + epochs * self.epoch_seconds


@dataclasses.dataclass(frozen=True)
class ProbedCost(RowCost):
    """A probed row's cost, with what an ensemble's estimate needs."""

    family: str = None
    per_sample: float = 0.0  # seconds to predict one example


def _epochs_at(costs, fraction):
    return {c.name: min(c.epochs, max(c.min_epochs, int(fraction * c.epochs + 1e-9))) for c in costs}


def _total(costs, epochs):
    return sum(c.seconds(epochs[c.name]) for c in costs)


def share_budget(costs, budget_seconds):
    """{row name: epochs} that fit `budget_seconds`, and whether even the minimum overruns.

    Every row keeps the largest common fraction of its planned epochs that fits (at
    least its `min_epochs`, never more than planned); returns (epochs, over_budget).
    """
    if budget_seconds is None or _total(costs, _epochs_at(costs, 1.0)) <= budget_seconds:
        return _epochs_at(costs, 1.0), False
    low, high = 0.0, 1.0  # the fit is monotone in the fraction: bisect it
    for _ in range(40):
        mid = (low + high) / 2
        if _total(costs, _epochs_at(costs, mid)) <= budget_seconds:
            low = mid
        else:
            high = mid
    epochs = _epochs_at(costs, low)
    return epochs, _total(costs, epochs) > budget_seconds


def probe_row(model, features, labels, *, batch_size, n_train, n_validation, n_test, n_subset,
              prepare=lambda f: f):
    """(epoch_seconds, fixed_seconds, predict_seconds_per_sample) of a compiled `model`,
    from PROBE_STEPS timed train steps at `batch_size` on the first rows of `features`
    (after one untimed step that traces the graph) and one timed prediction.

    The model's weights change: probe a copy of the row's model, never the row's own.
    """
    outputs = list(model.output.keys()) if isinstance(model.output, dict) else [training.OUTPUT]
    x = training.select_inputs(model, prepare({k: v[:batch_size] for k, v in features.items()}))
    y = {k: labels[:batch_size] for k in outputs}
    start = time.perf_counter()
    model.train_on_batch(x, y)  # builds and traces: a cost every row pays once
    trace_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(PROBE_STEPS):
        model.train_on_batch(x, y)
    step_seconds = (time.perf_counter() - start) / PROBE_STEPS
    model.predict(x, batch_size=batch_size, verbose=0)  # traces the prediction graph
    start = time.perf_counter()
    model.predict(x, batch_size=batch_size, verbose=0)
    per_sample = (time.perf_counter() - start) / len(labels[:batch_size])
    # An epoch: its steps, a validation pass, and the benchmark's own test evaluation.
    epoch = int(np.ceil(n_train / batch_size)) * step_seconds + (n_validation + n_test) * per_sample
    return epoch, trace_seconds + measure_seconds(per_sample, n_test, n_subset), per_sample


def measure_seconds(per_sample, n_test, n_subset):
    """Seconds of a row's measurements, for one prediction costing `per_sample` seconds."""
    return per_sample * (MEASURE_TEST_PASSES * n_test + MEASURE_SUBSET_PASSES * n_subset)


def _probe_plan(plan, ds, config, costs):
    """A RowCost for `plan`, probed on a copy of its model (ensembles: from the probed rows)."""
    from mmkeras.bench import recipe, strategies

    n_test, n_val = ds.size("test"), ds.size("validation")
    n_subset = min(config.robustness_samples, n_test)
    if plan.strategy == "ensemble":  # predicting its members on validation, then every measurement
        per_sample = sum(max((c.per_sample for c in costs.values() if c.family == m), default=0.0)
                         for m in plan.members)
        return ProbedCost(plan.name, 0, 0.0, per_sample * n_val + measure_seconds(per_sample, n_test, n_subset), 0,
                          family=plan.family, per_sample=per_sample)
    n_train, prepare = ds.size("train"), (lambda f: f)
    if plan.strategy == "recipe":  # compiled as recipe.fit_recipe does; it splits train + validation 80/20
        model = strategies.build_recipe(plan, ds)
        model.compile(optimizer="adam", loss={"label": "sparse_categorical_crossentropy"})
        n_all = n_train + n_val
        n_val = int(n_all * recipe.RECIPE["validation_split"])
        n_train, prepare = n_all - n_val, strategies.recipe_text
    else:
        model = training.compile_model(strategies.build_registered(plan, ds, with_sources=False))
    features, labels = training.split_arrays(ds, "train", np.arange(min(plan.batch_size, ds.size("train"))))
    epoch, fixed, per_sample = probe_row(model, features, labels, batch_size=plan.batch_size, n_train=n_train,
                                         n_validation=n_val, n_test=n_test, n_subset=n_subset, prepare=prepare)
    return ProbedCost(plan.name, plan.epochs, epoch, fixed, 1, family=plan.family, per_sample=per_sample)


class RunBudget:
    """A run's --time-budget: the rows' probed costs, and before each row a new share of
    the seconds left (estimates corrected by what the finished rows really cost)."""

    def __init__(self, minutes, started, costs, probe_seconds):
        self.seconds, self.started = float(minutes) * 60, started
        self.costs, self.probe_seconds = costs, probe_seconds
        self.rows = {}  # row name -> planned_seconds, planned_epochs, scheduled_epochs, spent_seconds
        self.correction = 1.0  # spent / expected seconds of the rows finished so far

    @classmethod
    def probe(cls, minutes, started, plans, ds, config):
        """Probe every row of `plans` (in order: an ensemble's estimate needs its members')."""
        start, costs = time.perf_counter(), {}
        for plan in plans:
            costs[plan.name] = _probe_plan(plan, ds, config, costs)
        return cls(minutes, started, costs, time.perf_counter() - start)

    def left(self):
        return self.seconds - (time.perf_counter() - self.started)

    def _cost(self, name):
        c = self.costs[name]
        return dataclasses.replace(c, epoch_seconds=c.epoch_seconds * self.correction,
                                   fixed_seconds=c.fixed_seconds * self.correction)

    def share(self, names):
        """(epochs, over_budget, seconds) of the rows `names` in what is left of the budget."""
        costs = [self._cost(n) for n in names]
        epochs, over = share_budget(costs, self.left())
        return epochs, over, {c.name: c.seconds(epochs[c.name]) for c in costs}

    def start_row(self, plan, names):
        """(`plan` with its epochs cut to its share, the seconds the run should still take);
        `names`: it and the rows after it."""
        epochs, over, seconds = self.share(names)
        self.rows[plan.name] = {"scheduled_epochs": plan.epochs, "planned_epochs": epochs[plan.name],
                                "planned_seconds": seconds[plan.name], "over_budget": over}
        return dataclasses.replace(plan, epochs=epochs[plan.name]), sum(seconds.values())

    def finish_row(self, name, spent_seconds, epochs_run):
        """Record a finished row; its cost for the epochs it really ran corrects later estimates."""
        self.rows[name].update(spent_seconds=spent_seconds, epochs_run=epochs_run)
        done = [(n, r) for n, r in self.rows.items() if "spent_seconds" in r]
        expected = sum(self.costs[n].seconds(r["epochs_run"]) for n, r in done)
        spent = sum(r["spent_seconds"] for _, r in done)
        self.correction = min(max(spent / max(expected, 1e-9), 0.5), 3.0)

    def record(self):
        """What results.json keeps of the budget."""
        return {"minutes": self.seconds / 60, "probe_seconds": self.probe_seconds,
                "spent_seconds": time.perf_counter() - self.started, "correction": self.correction,
                "rows": self.rows}
