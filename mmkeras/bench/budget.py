"""--time-budget: what each row costs (`probe_row`, one probe per kind of row), how much a
row measures (`Measurements`), and how the run's seconds are shared (`share_budget`).

A row needs `fixed_seconds` (building, tracing, its fusion recipe, every measurement) plus
`epoch_seconds` per epoch. When the rows' needs exceed the budget:

1. measurement gets cheaper first (`REDUCED`: a smaller robustness subset, timings on
   fewer examples, no Shapley shares for unimodal rows, where they are 1 and 0 by
   construction); results.json says what was reduced;
2. then epochs are cut: rows whose models later rows borrow (a fused row's warm start, an
   ensemble's members) are served first, up to their schedule; the other rows share what
   is left, each keeping the same fraction of its planned epochs, at least `min_epochs`;
3. rows are left out only if every row at its fewest epochs overruns, or if a borrowed row
   would get less than a floor of its planned epochs (BORROWED_FLOORS, the highest that
   leaving rows out can give, while a row that borrows stays): ten fused rows and the
   ensembles on a half-trained image branch are worth less than fewer rows on a trained
   one (on 7,200 CIFAR-10 pairs under an 8-minute budget the image row got 1 of 16 epochs,
   0.50 against 0.80, and the best fused row 0.75 against 0.89 untimed; at half the
   machine's speed, 7 of 16 epochs gave 0.76 and the best multimodal row 0.87). Never left
   out: a borrowed row, a recipe row and the seed graph's row compared with it, the
   stacking ensemble (a few seconds of predictions: a multimodal row on the trained
   branches whatever the budget). The row whose absence saves the most goes first,
   ensembles and rows that train alike (one epoch of a cheap warm-started fused row beats
   an ensemble's predictions), until the rest fit; where no floor can be kept, rows are left out only as far as the fewest
   epochs need. The plan, the console and results.json name them (a resumed run with more
   time trains them).

Every trained row is probed on its own model: rows of one fusion stage still differ in
what they cut and train (co-attention reads token sequences, concatenation pooled
vectors), and one shared probe misjudged them by up to 8x. A frozen tensor that several
rows cut (`Probe.extract`) is paid once, by the first: the prediction memo shares it.

The runner shares again before every row with what is left, the estimates of each kind
of row corrected by what the finished rows of that kind really cost; a row whose training
runs DEADLINE_SLACK x longer than planned is stopped after its epoch (`TrainingDeadline`).
"""

import dataclasses
import functools
import time

import keras
import numpy as np

import mmkeras
from mmkeras import training
from mmkeras.bench import measure
from mmkeras.bench.metrics import Measured
from mmkeras.frozen_features import split_frozen
from mmkeras.fusion_recipes import FROZEN_FIT_RECIPES
from mmkeras.models.experts import MAX_FIT_EXAMPLES
from mmkeras.models.transfer import freeze_prefix

# Train steps timed per probe (after one untimed step that traces the graph).
PROBE_STEPS = 3
# Timed predictions of one batch per probe; the shortest counts (`_fastest`).
PREDICT_REPEATS = 3
# Prediction passes over the validation split of a fusion recipe that fits weights there
# ("experts": one per presence state), beyond the row's training.
RECIPE_VALIDATION_PASSES = 4  # over at most experts.MAX_FIT_EXAMPLES validation pairs
# Seconds kept back for writing results.json, results.md and the plots.
REPORT_SECONDS = 15.0


@dataclasses.dataclass(frozen=True)
class Measurements:
    """How much each row measures beside accuracy: the robustness subset (five perturbed
    passes and, where measured, four passes for the Shapley shares), the examples the
    throughput is timed on, and whether unimodal rows get Shapley shares."""

    robustness_samples: int
    timing_samples: int = measure.TIMING_SAMPLES
    unimodal_shares: bool = True

    def shares(self, family):
        """Whether a row of `family` gets Shapley modality shares (recipe rows never do)."""
        return self.unimodal_shares or family not in ("image", "text")

    def samples(self, family, n_test):
        """Examples a row of `family` predicts for its measurements (the test set's clean
        predictions come from the last epoch and are counted there)."""
        subset = min(self.robustness_samples, n_test)
        passes = len(measure.ROBUSTNESS) + (measure.SHARE_PASSES if self.shares(family) else 0)
        return passes * subset + min(self.timing_samples, n_test) + measure.LATENCY_REPEATS

    def reductions(self, full, n_test):
        """What these measurements leave out against `full` (results.json, the plan)."""
        out = []
        if min(self.robustness_samples, n_test) < min(full.robustness_samples, n_test):
            out.append(f"robustness, image/text adds and shares on {min(self.robustness_samples, n_test):,} "
                       f"test pairs (not {min(full.robustness_samples, n_test):,})")
        if min(self.timing_samples, n_test) < min(full.timing_samples, n_test):
            out.append(f"predict ms/sample timed on {min(self.timing_samples, n_test):,} test pairs "
                       f"(not {min(full.timing_samples, n_test):,})")
        if full.unimodal_shares and not self.unimodal_shares:
            out.append("no Shapley shares for image-only and text-only rows (1 and 0 by construction)")
        return out


# Under a budget that full measurements would overrun. 512 pairs: a robustness accuracy
# near 0.8 then has a standard error of about 1.8 points (2,000: 0.9); whole batches of
# 256, as the prediction runs them: a short last batch would trace the graph again.
REDUCED = Measurements(robustness_samples=512, timing_samples=256, unimodal_shares=False)


def full_measurements(config):
    return Measurements(robustness_samples=config.robustness_samples)


class BudgetMeasured(Measured):
    """`metrics.Measured` under `measurements` (see Measurements) for a row of `family`."""

    def __init__(self, trained, ds, config, *, family, measurements):
        super().__init__(trained, ds, config)
        self.robustness_samples = measurements.robustness_samples
        self._family, self._measurements = family, measurements

    @functools.cached_property
    def model_features(self):
        # Only the first `timing_samples` test pairs: the throughput timing reads no more.
        n = self._measurements.timing_samples
        return self.trained.prepare({k: v[:n] for k, v in self.test_x.items()})

    @functools.cached_property
    def shares(self):
        return super().shares if self._measurements.shares(self._family) else None


# The shares of their planned epochs that borrowed rows are held to while rows that borrow
# nothing could be left out instead (step 3 of the module docstring), the highest that
# fits first. Measured on 7,200 CIFAR-10 pairs (speed-run image row, 16 epochs planned):
# 16 epochs 0.80, 13 0.79, 7 0.76, 1 0.50; the fused rows and ensembles follow it.
BORROWED_FLOORS = (0.75, 0.5, 0.25)

# The ensemble method never left out (RowModel.always_kept): it costs seconds of
# predictions, so a run whose budget leaves out every fused row still reports a multimodal
# row built on its trained branches (at half speed under --time-budget 8 on 7,200 pairs,
# without it, the image row's overrun left none); and it was the best ensemble of every
# run measured: CIFAR-10 0.9493 (the others 0.9023-0.9304), 7,200 CIFAR-10 pairs with two
# caption sets 0.8870 (0.8475-0.8640) and 0.9630 (0.9130-0.9625).
ALWAYS_KEPT_ENSEMBLE = "stacking"

# The share of the whole budget that lengthened rows (RowCost.max_epochs) leave unplanned:
# the estimates of the rows after them err by up to a tenth (budget.corrections).
EXTENSION_MARGIN = 0.1

# A row may train this much longer than planned before its fit is stopped (TrainingDeadline).
DEADLINE_SLACK = 1.2


class TrainingDeadline(keras.callbacks.Callback):
    """Ends a fit after the epoch from which one more epoch, as long as the last one, would
    pass `seconds` of training: a machine that got busier cannot make a row overrun the
    budget by more than an epoch. `stopped_after` is the epoch it stopped after (None: never)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.stopped_after = seconds, None

    def on_train_begin(self, logs=None):
        self.start = self.last = time.perf_counter()
        self.stopped_after = None

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        last_planned = epoch + 1 >= self.params.get("epochs", epoch + 1)
        if now - self.start + (now - self.last) > self.seconds and not last_planned:
            self.model.stop_training, self.stopped_after = True, epoch + 1
        self.last = now


@dataclasses.dataclass(frozen=True)
class RowCost:
    """What one row is expected to cost: `fixed_seconds` + epochs x `epoch_seconds`.

    borrowed: later rows start from or combine this row's model: it is served first.
    """

    name: str
    epochs: int  # planned without a budget (the schedule's, or the flags')
    epoch_seconds: float = 0.0
    fixed_seconds: float = 0.0
    min_epochs: int = 1
    borrowed: bool = False
    max_epochs: int = None  # the most a budget with room may give it (None: `epochs`)

    def seconds(self, epochs):
        return self.fixed_seconds + epochs * self.epoch_seconds

    @property
    def longest(self):
        return max(self.epochs, self.max_epochs or self.epochs)


def _epochs_at(costs, fraction):
    return {c.name: min(c.epochs, max(c.min_epochs, int(fraction * c.epochs + 1e-9))) for c in costs}


def _total(costs, epochs):
    return sum(c.seconds(epochs[c.name]) for c in costs)


def _largest_fraction(costs, seconds):
    """The largest common fraction of their planned epochs that `costs` fit in `seconds`."""
    if _total(costs, _epochs_at(costs, 1.0)) <= seconds:
        return 1.0
    low, high = 0.0, 1.0  # the fit is monotone in the fraction: bisect it
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if _total(costs, _epochs_at(costs, mid)) <= seconds else (low, mid)
    return low


def share_budget(costs, budget_seconds):
    """({row name: epochs} that fit `budget_seconds`, whether even the minimum overruns).

    Rows marked `borrowed` keep the largest common fraction of their planned epochs that
    fits with every other row at its minimum; the others then share what is left the same
    way. No row gets fewer than its `min_epochs` or more than planned.
    """
    if budget_seconds is None or _total(costs, _epochs_at(costs, 1.0)) <= budget_seconds:
        return _epochs_at(costs, 1.0), False
    epochs = _epochs_at(costs, 0.0)
    if _total(costs, epochs) > budget_seconds:
        return epochs, True
    for tier in ([c for c in costs if c.borrowed], [c for c in costs if not c.borrowed]):
        others = [c for c in costs if c not in tier]
        fraction = _largest_fraction(tier, budget_seconds - _total(others, epochs))
        epochs.update(_epochs_at(tier, fraction))
    return epochs, False


def extend_into(costs, epochs, seconds):
    """`epochs` (every row at its schedule) with the rows that may run longer (`max_epochs`)
    lengthened by a common factor, each up to its `max_epochs`, while all of `costs` fit
    in `seconds`."""
    longer = [c for c in costs if c.longest > c.epochs]
    if not longer or _total(costs, epochs) > seconds:
        return epochs

    def at(factor):
        return {**epochs, **{c.name: min(c.longest, int(factor * c.epochs + 1e-9)) for c in longer}}

    low, high = 1.0, max(c.longest / c.epochs for c in longer)
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if _total(costs, at(mid)) <= seconds else (low, mid)
    return at(low)


@dataclasses.dataclass(frozen=True)
class Probe:
    """What one probe measured of a kind of row (seconds)."""

    step_seconds: float  # one train step at the row's batch
    build_seconds: float  # building, compiling and tracing the train step
    per_sample: float  # predicting one example
    trace_seconds: float  # tracing a prediction
    # A row that trains on cached frozen features (mmkeras.frozen_features): the steps and
    # predictions above are its trainable part's; computing each cut tensor costs seconds
    # per example, once per run for all rows that cut it (the prediction memo shares it):
    # ((key, seconds per example), ...), a key naming the borrowed models and the tensor.
    extract: tuple = ()
    # Predicting one example with the model as it is measured, where that differs from the
    # model as it trains (a speed-run image row measures six test-time views): None, the same.
    measured_per_sample: float = None

    @property
    def extract_per_sample(self):
        return sum(seconds for _, seconds in self.extract)

    @property
    def measure_per_sample(self):
        return self.per_sample if self.measured_per_sample is None else self.measured_per_sample


def _fastest(call, repeats=PREDICT_REPEATS):
    """The shortest of `repeats` timed calls: one prediction of a batch lasts milliseconds,
    and a single timing of it caught a moment of load on a shared machine (8x too slow)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def probe_row(model, features, labels, *, batch_size, prepare=lambda f: f, build_seconds=0.0):
    """A `Probe` of a compiled `model`: PROBE_STEPS timed train steps at `batch_size` on
    the first rows of `features` (after one untimed step that traces the graph) and one
    timed prediction (after one that traces it). `build_seconds`: what building it took.

    The model's weights change: probe a copy of the row's model, never the row's own.
    """
    outputs = list(model.output.keys()) if isinstance(model.output, dict) else [training.OUTPUT]
    x = training.select_inputs(model, prepare({k: v[:batch_size] for k, v in features.items()}))
    y = {k: labels[:batch_size] for k in outputs}
    start = time.perf_counter()
    model.train_on_batch(x, y)  # builds and traces: a cost every row pays once
    build_seconds += time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(PROBE_STEPS):
        model.train_on_batch(x, y)
    step_seconds = (time.perf_counter() - start) / PROBE_STEPS
    start = time.perf_counter()
    model.predict(x, batch_size=batch_size, verbose=0)  # traces the prediction graph
    first = time.perf_counter() - start
    predict_seconds = _fastest(lambda: model.predict(x, batch_size=batch_size, verbose=0))
    return Probe(step_seconds, build_seconds, predict_seconds / len(labels[:batch_size]),
                 max(first - predict_seconds, 0.0))


def probe_key(plan):
    """The probe that prices row `plan`: its own. Warm-started fused rows of one fusion stage
    once shared a probe, and it priced co-attention at an eighth of its cost (its head reads
    token sequences, concatenation's pooled vectors)."""
    return ("row", plan.name)


def _extract_key(plan, name, tensor):
    """What identifies the cut tensor `name`: the borrowed models, its name and shape. Rows
    with the same key share one extraction (through the prediction memo)."""
    return tuple(sorted((plan.warm_start or {}).items())), name, tuple(tensor.shape[1:])


def _cached_split(plan, model, config):
    """The FrozenSplit a warm-started row of `plan` trains through (None: the whole model)."""
    if not plan.warm_start or plan.fusion_recipe not in FROZEN_FIT_RECIPES or config.modality_dropout:
        return None
    for prefix in FROZEN_FIT_RECIPES[plan.fusion_recipe]:
        freeze_prefix(model, prefix)
    return split_frozen(model)


def _probe_plan(plan, ds, config, extracted=None):
    """A Probe of `plan`, on an untrained copy of its model (of its trainable part, for a
    row that trains on cached frozen features). extracted: {(cut tensor's key, examples):
    (seconds per example, its values)} of the probes so far, filled in: ten fused rows that
    cut the same image features time that extraction once."""
    extracted = {} if extracted is None else extracted
    from mmkeras.bench import strategies

    prepare, start = (lambda f: f), time.perf_counter()
    features, labels = training.split_arrays(ds, "train", np.arange(min(plan.batch_size, ds.size("train"))))
    extract = ()
    if plan.strategy == "recipe":  # compiled as recipe.fit_recipe does
        model = strategies.build_recipe(plan, ds)
        model.compile(optimizer="adam", loss={"label": "sparse_categorical_crossentropy"})
        prepare = strategies.recipe_text
    else:
        model = strategies.build_registered(plan, ds, with_sources=False)
        split = _cached_split(plan, model, config)
        if split is not None:
            parts, computed = [], {}
            for part in split.parts():  # each cut tensor as the memo computes it (in batches of 256)
                name, tensor = next(iter(part.output.items()))
                key = _extract_key(plan, name, tensor)
                if (key, len(labels)) not in extracted:
                    part.predict(features, batch_size=256, verbose=0)  # traces
                    timed = time.perf_counter()
                    values = part.predict(features, batch_size=256, verbose=0)
                    extracted[key, len(labels)] = ((time.perf_counter() - timed) / len(labels), values)
                seconds, values = extracted[key, len(labels)]
                computed.update(values)
                parts.append((key, seconds))
            extract, features, model = tuple(parts), split.head_inputs(computed, features), split.head
        training.compile_model(model)
    build = time.perf_counter() - start
    probe = probe_row(model, features, labels, batch_size=plan.batch_size, prepare=prepare, build_seconds=build)
    measured = None
    if plan.training == "speedrun":  # measured with its test-time views (speedrun.fit_speedrun)
        from mmkeras import speedrun

        viewed, x = speedrun.with_views(model), training.select_inputs(model, features)
        viewed.predict(x, batch_size=plan.batch_size, verbose=0)  # traces
        measured = _fastest(lambda: viewed.predict(x, batch_size=plan.batch_size, verbose=0)) / len(labels)
    return dataclasses.replace(probe, extract=extract, measured_per_sample=measured)


@dataclasses.dataclass(frozen=True)
class RowModel:
    """How one row's cost follows from its kind's probe (see `RunBudget.cost`)."""

    name: str
    key: tuple  # its probe_key
    family: str
    epochs: int
    borrowed: bool
    n_train: int  # examples per epoch
    n_eval: int  # examples predicted per epoch (validation and test)
    batch_size: int = None
    recipe_passes: int = 0  # validation passes of its fusion recipe
    members: tuple = ()  # ensembles: the probe keys of the rows whose predictions they combine
    # A recipe row and the seed graph's row compared with it: never left out, as a pair.
    reference: bool = False
    borrows: bool = False  # it starts from or combines borrowed rows (warm start, ensemble)
    max_epochs: int = None  # the most a budget with room may give it (RowPlan.max_epochs)
    # Never left out: the stacking ensemble (ALWAYS_KEPT_ENSEMBLE).
    always_kept: bool = False


def _row_model(plan, plans, ds, keys):
    from mmkeras.bench import recipe

    n_train, n_val, n_test = ds.size("train"), ds.size("validation"), ds.size("test")
    borrowed = plan.saved_model is not None and any(
        plan.saved_model in (p.warm_start or {}).values() or (p.strategy == "ensemble" and plan.family in p.members)
        for p in plans)
    if plan.strategy == "ensemble":  # predicts its members on validation (combiner fit), measures
        members = tuple(next((keys[p.name] for p in plans if p.saved_model and p.family == m), None)
                        for m in plan.members)
        return RowModel(plan.name, ("ensemble", members), plan.family, 0, False, 0, n_val, members=members,
                        borrows=True, always_kept=mmkeras.model_info(plan.model).get("method") == ALWAYS_KEPT_ENSEMBLE)
    if plan.strategy == "recipe":  # it splits train + validation 80/20 itself
        n_all = n_train + n_val
        n_val = int(n_all * recipe.RECIPE["validation_split"])
        n_train = n_all - n_val
    recipe_passes = RECIPE_VALIDATION_PASSES if plan.fusion_recipe else 0
    compared = any(p.strategy == "recipe" and p.model == plan.name for p in plans)
    return RowModel(plan.name, keys[plan.name], plan.family, plan.epochs, borrowed, n_train, n_val + n_test,
                    plan.batch_size, recipe_passes, reference=plan.strategy == "recipe" or compared,
                    borrows=bool(plan.warm_start), max_epochs=plan.max_epochs)


class RunBudget:
    """A run's --time-budget: one probe per kind of row, then before each row a new share
    of the seconds left (each kind's estimates corrected by what its finished rows cost)."""

    def __init__(self, minutes, started, rows, probes, probe_seconds, *, n_test, n_validation, full):
        self.seconds, self.started = float(minutes) * 60, started
        self.models, self.probes, self.probe_seconds = rows, probes, probe_seconds
        self.n_test, self.n_validation = n_test, n_validation
        self.full = self.measurements = full
        self.rows = {}  # row name -> scheduled/planned epochs, planned/spent seconds, measurements
        self.skipped = {}  # row name -> why it was left out
        self.floor = 0.0  # the share of their epochs the last share kept borrowed rows at (0: none)
        self.corrections = {}  # probe key -> spent / expected seconds of its finished rows
        self._deadlines = {}  # row name -> the TrainingDeadline of its fit
        # row name -> it extracts features; the rows kept after it, and their planned seconds
        self._extracts, self._after, self._after_seconds = {}, {}, {}

    @classmethod
    def probe(cls, minutes, started, plans, ds, config):
        """Probe one row of each kind among `plans` (the rows still to train)."""
        start = time.perf_counter()
        keys = {p.name: probe_key(p) for p in plans}
        probes, extracted = {}, {}
        for plan in plans:
            if plan.strategy != "ensemble" and keys[plan.name] not in probes:
                probes[keys[plan.name]] = _probe_plan(plan, ds, config, extracted)
        rows = {p.name: _row_model(p, plans, ds, keys) for p in plans}
        return cls(minutes, started, rows, probes, time.perf_counter() - start, n_test=ds.size("test"),
                   n_validation=ds.size("validation"), full=full_measurements(config))

    def left(self):
        """Seconds left for rows: the budget less what has run and the report's reserve."""
        return self.seconds - (time.perf_counter() - self.started) - REPORT_SECONDS

    def _correction(self, key):
        """Spent / expected seconds of the finished rows of kind `key`; a kind with none yet
        takes that of all finished rows if they ran slower (a busier machine slows every
        kind), never if they ran faster (one kind's overestimate says little of another's)."""
        if key in self.corrections:
            return self.corrections[key]
        done = [r for r in self.rows.values() if "spent_seconds" in r]
        expected = sum(r["expected_seconds"] for r in done)
        return min(max(sum(r["spent_seconds"] for r in done) / expected, 1.0), 3.0) if expected else 1.0

    def _extracting(self, names):
        """{row: the cut tensors' keys it extracts} for the rows `names` (in order): each
        tensor no finished row extracted, by the first row that cuts it."""
        done = {key for n, r in self.rows.items() if "spent_seconds" in r and self.models[n].key in self.probes
                for key, _ in self.probes[self.models[n].key].extract}
        first = {}
        for n in names:
            for key, _ in self.probes[self.models[n].key].extract if self.models[n].key in self.probes else ():
                if key not in done:
                    done.add(key)
                    first.setdefault(n, set()).add(key)
        return first

    def _costs(self, names, measurements, floor=0.0):
        """RowCosts of the rows `names`; a borrowed row's fewest epochs are `floor` of its
        planned ones."""
        extracting = self._extracting(names)
        costs = [self.cost(n, measurements, extracts=extracting.get(n, ())) for n in names]
        return [dataclasses.replace(c, min_epochs=max(c.min_epochs, int(np.ceil(floor * c.epochs))))
                if c.borrowed and floor else c for c in costs]

    def cost(self, name, measurements, extracts=()):
        """The RowCost of row `name` when every row measures `measurements`; extracts: the
        keys of the cut tensors it computes (no earlier row cut them)."""
        m = self.models[name]
        if m.members:  # an ensemble: its members' predictions, on validation and in its measurements
            per_sample = sum(self.probes[k].per_sample for k in m.members if k in self.probes)
            trace = sum(self.probes[k].trace_seconds for k in m.members if k in self.probes)
            seconds = per_sample * (m.n_eval + measurements.samples(m.family, self.n_test)) + 3 * trace
            return RowCost(name, 0, 0.0, seconds * self._correction(m.key), min_epochs=0)
        p = self.probes[m.key]
        epoch = int(np.ceil(m.n_train / m.batch_size)) * p.step_seconds + m.n_eval * p.per_sample
        # Building and tracing, its recipe's passes and traces, its measurements (and their
        # two timing traces and one for the perturbed predictions).
        fixed = (p.build_seconds + p.per_sample * m.recipe_passes * min(self.n_validation, MAX_FIT_EXAMPLES)
                 + p.measure_per_sample * measurements.samples(m.family, self.n_test)
                 + (3 + bool(m.recipe_passes)) * p.trace_seconds)
        if p.measured_per_sample is not None:  # the model with its views, once more over the test set
            fixed += p.measured_per_sample * self.n_test
        # The cut tensors it computes first, over every split and the perturbed subset.
        per_sample = sum(seconds for key, seconds in p.extract if key in extracts)
        fixed += per_sample * (m.n_train + m.n_eval + measurements.samples(m.family, self.n_test))
        c = self._correction(m.key)
        return RowCost(name, m.epochs, epoch * c, fixed * c, borrowed=m.borrowed, max_epochs=m.max_epochs)

    def share(self, names):
        """(epochs, over_budget, seconds, skipped) of the rows `names` in what is left of the
        budget: each kept row's epochs and seconds, and the rows left out (step 3 above).

        If full measurements would cut any row's epochs, every row from then on measures
        `REDUCED` (never silently: see `record`)."""
        for measurements in dict.fromkeys((self.measurements, REDUCED)):
            costs = self._costs(names, measurements)
            epochs, over = share_budget(costs, self.left())
            if all(epochs[c.name] == c.epochs for c in costs) and not over:
                break
        self.measurements = measurements
        # The stacking ensemble (never left out) counts as a row built on the borrowed ones:
        # at half speed under --time-budget 8 on 7,200 pairs, the image row at 7 of 8
        # epochs and stacking alone gave 0.8840, where not counting it lowered the floor
        # to keep fused rows: 3 image epochs and 0.8620 (2026-12-02).
        borrowing = [n for n in names if self.models[n].borrows]
        for floor in (*BORROWED_FLOORS, 0.0):
            kept, costs, epochs, over = self._leave_out(names, measurements, floor)
            # A floor that leaves out every row built on the borrowed ones serves nothing.
            if not over and (not borrowing or set(borrowing) & set(kept) or not floor):
                break
        self.floor = floor
        if not over and kept == list(names) and measurements == self.full:
            # Room to spare: a row that may run longer (a speed-run schedule) takes it, but
            # never the last EXTENSION_MARGIN of the budget (estimates err).
            epochs = extend_into(costs, epochs, self.left() - EXTENSION_MARGIN * self.seconds)
        return (epochs, over, {c.name: c.seconds(epochs[c.name]) for c in costs},
                [n for n in names if n not in kept])

    def _leave_out(self, names, measurements, floor):
        """(rows kept, their costs, epochs, over_budget): droppable rows left out while the
        rest overrun at their fewest epochs (`floor`: borrowed rows', see `_costs`), the one
        whose absence saves the most first, ensembles and rows that train alike: one epoch
        of a cheap warm-started fused row is worth more than an ensemble's predictions
        (a slow machine under `--time-budget 8` on 7,200 pairs once ran three ensembles,
        best 0.8705, and no fused row, which reach 0.8985 in one epoch)."""
        kept = list(names)
        costs = self._costs(kept, measurements, floor)
        epochs, over = share_budget(costs, self.left())
        while over and any(self._droppable(c) for c in costs):
            # Not merely the costliest row, which may be costly only as the first to compute
            # features that the next row would then pay.
            def floor_without(name):
                rest = self._costs([n for n in kept if n != name], measurements, floor)
                return sum(c.seconds(c.min_epochs) for c in rest)

            kept.remove(min((c.name for c in costs if self._droppable(c)), key=floor_without))
            costs = self._costs(kept, measurements, floor)
            epochs, over = share_budget(costs, self.left())
        return kept, costs, epochs, over

    def _droppable(self, cost):
        """Whether the row of `cost` may be left out: not one that later rows borrow, nor a
        recipe row or the seed graph's row compared with it (one without the other says
        nothing), nor the stacking ensemble (ALWAYS_KEPT_ENSEMBLE)."""
        m = self.models[cost.name]
        return not cost.borrowed and not m.reference and not m.always_kept

    def start_row(self, plan, names):
        """(`plan` with its epochs cut to its share, or None if it is left out; the seconds
        the run should still take); `names`: it and the rows after it."""
        epochs, over, seconds, skipped = self.share(names)
        if plan.name in skipped:
            fewest = (f"with the rows that later rows borrow at {self.floor:.0%} of their epochs and the others "
                      "at their fewest" if self.floor else "even at their fewest epochs")
            self.skipped[plan.name] = (f"with it, the rows still to run ({len(names)}) need more than "
                                       f"the {max(self.left(), 0) / 60:.1f} min left {fewest}")
            return None, sum(seconds.values())
        self.rows[plan.name] = {"scheduled_epochs": plan.epochs, "planned_epochs": epochs[plan.name],
                                "planned_seconds": seconds[plan.name], "over_budget": over,
                                "measurements": "full" if self.measurements == self.full else "reduced"}
        kept = [n for n in names if n not in skipped]
        self._extracts[plan.name] = self._extracting(kept).get(plan.name, ())
        self._after[plan.name] = kept[kept.index(plan.name) + 1:]
        self._after_seconds[plan.name] = sum(seconds[n] for n in self._after[plan.name])
        return dataclasses.replace(plan, epochs=epochs[plan.name]), sum(seconds.values())

    def train_config(self, config, plan):
        """`config` for training row `plan` (started with `start_row`): its callbacks end with
        a TrainingDeadline. It may train DEADLINE_SLACK x its planned seconds, or longer
        where the budget has room beyond what the rows after it are planned to take (a loose
        budget never stops a row), never so long that they cannot have their fewest epochs."""
        m = self.models[plan.name]
        if m.members:  # nothing trained in epochs
            return config
        costs = self._costs([plan.name, *self._after[plan.name]], self.measurements, self.floor)
        cost, build = costs[0], self.probes[m.key].build_seconds * self._correction(m.key)
        # The fit's clock starts after the build: the rest of its fixed seconds come after it.
        left = self.left() - (cost.fixed_seconds - build)
        slack = max(DEADLINE_SLACK * (plan.epochs * cost.epoch_seconds + build), left - self._after_seconds[plan.name])
        seconds = min(slack, left - sum(c.seconds(c.min_epochs) for c in costs[1:]))
        self._deadlines[plan.name] = TrainingDeadline(max(seconds, 0.0))
        return dataclasses.replace(config, callbacks=[*config.callbacks, self._deadlines[plan.name]])

    def measured(self, trained, ds, config, plan):
        """What the metrics of row `plan` are computed from, under this budget's measurements."""
        return BudgetMeasured(trained, ds, config, family=plan.family, measurements=self.measurements)

    def finish_row(self, name, spent_seconds, epochs_run):
        """Record a finished row; its cost for the epochs it ran corrects its kind's estimates."""
        row, key = self.rows[name], self.models[name].key
        correction = self._correction(key)
        cost = self.cost(name, self.measurements, self._extracts.get(name, ()))
        # The estimate before correction, for the epochs it really ran.
        row.update(spent_seconds=spent_seconds, epochs_run=epochs_run,
                   expected_seconds=cost.seconds(epochs_run) / correction)
        if name in self._deadlines:
            row["stopped_by_deadline_after"] = self._deadlines.pop(name).stopped_after
        kind = [r for n, r in self.rows.items() if "spent_seconds" in r and self.models[n].key == key]
        ratio = sum(r["spent_seconds"] for r in kind) / max(sum(r["expected_seconds"] for r in kind), 1e-9)
        self.corrections[key] = min(max(ratio, 0.5), 3.0)

    def robustness_samples(self):
        return min(self.measurements.robustness_samples, self.n_test)

    def record(self):
        """What results.json keeps of the budget."""
        return {"minutes": self.seconds / 60, "probe_seconds": self.probe_seconds, "probes": len(self.probes),
                "spent_seconds": time.perf_counter() - self.started,
                "report_seconds_reserved": REPORT_SECONDS,
                "measurements": dataclasses.asdict(self.measurements),
                "reduced_measurements": self.measurements.reductions(self.full, self.n_test),
                # Each kind of row named by its first row.
                "corrections": {next(n for n, m in self.models.items() if m.key == k): v
                                for k, v in self.corrections.items()},
                "rows": self.rows, "skipped": self.skipped}
