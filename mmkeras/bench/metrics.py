"""The row metrics: ONE list, `METRICS`. Each entry says where its value lives in a row of
results.json, its results.md column, its format and how it is computed; the row, the
table and the tests follow the list, so a new metric is one new entry.
"""

import dataclasses
import functools
from typing import Callable

import numpy as np

from mmkeras import training
from mmkeras.bench import measure
from mmkeras.bench.strategies import as_is
from mmkeras.evaluation import classification_report, confusion_matrix, per_class_recall, worst_class_recall
from mmkeras.explain.contributions import shares_from_passes


class Measured:
    """What the metrics are computed from: a trained row (strategies.Trained) and the test set.

    Each quantity is computed once, when a metric first asks for it.
    """

    def __init__(self, trained, ds, config):
        self.trained, self.model, self.stats = trained, trained.model, trained.stats
        self.test_x, self.test_y = training.split_arrays(ds, "test")  # a streamed set's images decoded
        self.train_y = training.split_labels(ds, "train")
        self.num_classes, self.class_names = ds.num_classes, ds.class_names
        self.seed, self.robustness_samples = config.seed, config.robustness_samples
        # The curve predicted the test set after the last epoch: the trained model's
        # predictions (unless a user callback, e.g. EarlyStopping, changed the weights after it).
        self._reuse_curve = trained.curve.predictions is not None and not config.callbacks

    @functools.cached_property
    def predictions(self):
        """Test-set class ids."""
        return self.trained.curve.predictions if self._reuse_curve else self.trained.predict(self.test_x)

    @functools.cached_property
    def report(self):
        return classification_report(self.test_y, self.predictions, self.num_classes)

    @functools.cached_property
    def recalls(self):
        """{class name: recall on the test set} (None for a class with no test example)."""
        return per_class_recall(self.test_y, self.predictions, self.class_names)

    @functools.cached_property
    def degenerate(self):
        """Why the row's predictions say nothing about its inputs, or None: it answers one
        class for every test pair, or it is no more accurate than always answering the
        training split's majority class. Such a row is flagged, never reported as a plain
        result (a short training on imbalanced data ends there)."""
        predicted = np.unique(self.predictions)
        if len(predicted) == 1:
            return f"predicts one class ({self.class_names[int(predicted[0])]}) for every test pair"
        majority = int(np.bincount(np.asarray(self.train_y, np.int64), minlength=self.num_classes).argmax())
        baseline = float(np.mean(self.test_y == majority))
        if self.report["accuracy"] <= baseline:
            return (f"accuracy {self.report['accuracy']:.4f} is no better than always answering the majority "
                    f"class {self.class_names[majority]} ({baseline:.4f})")
        return None

    @functools.cached_property
    def model_features(self):
        """The test features as the model reads them (timings)."""
        return self.trained.prepare(self.test_x)

    @functools.cached_property
    def subset_rows(self):
        """Positions of a seeded test subset for the perturbed measures: five perturbed
        passes over the full test set would cost more than some rows' training."""
        return np.sort(np.random.default_rng(self.seed).permutation(len(self.test_y))[: self.robustness_samples])

    @functools.cached_property
    def subset(self):
        """(features, labels) of the subset."""
        rows = self.subset_rows
        return {k: v[rows] for k, v in self.test_x.items()}, self.test_y[rows]

    @functools.cached_property
    def perturbed(self):
        """measure.perturbations of the subset (the same arrays for every pass that reads
        them: the run's prediction memo recognises them)."""
        return measure.perturbations(self.subset[0], self.seed)

    @functools.cached_property
    def robustness(self):
        """Accuracy under each perturbation, on the seeded subset."""
        return measure.robustness(self.trained.predict, *self.subset, self.seed, perturbed=self.perturbed)

    @functools.cached_property
    def subset_accuracy(self):
        # The subset's clean predictions are the test set's, already made.
        rows = self.subset_rows
        return float(np.mean(self.predictions[rows] == self.test_y[rows]))

    def contribution(self, modality):
        """Accuracy lost when `modality` is blanked (on the subset): what the row gets from it."""
        return self.subset_accuracy - self.robustness[f"{modality}_missing"]

    @functools.cached_property
    def shares(self):
        """mmkeras.explain.mean_modality_shares on the subset (None for a model that takes
        other features than the package's, the recipe rows)."""
        if self.trained.prepare is not as_is:
            return None
        # The four passes: clean, and the robustness measures' blanked copies (text missing:
        # image only; image missing: text only; both blanked).
        text_missing, image_missing = self.perturbed["text_missing"], self.perturbed["image_missing"]
        passes = (self.subset[0], text_missing, image_missing, dict(image_missing, text=text_missing["text"]))
        return shares_from_passes(*(training.predict_proba(self.model, f) for f in passes))


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str  # its key in a row of results.json; "group/key" nests it (robustness/text_missing)
    title: str  # its results.md column; None: results.json only
    format: str  # format spec of its results.md cell
    compute: Callable  # Measured -> value
    optional: bool = False  # a None value is left out of the row (instead of written as null)
    render: Callable = None  # value -> its results.md cell, where `format` cannot write the value

    def value(self, row):
        """This metric's value in a results.json row (None where the row has none)."""
        *groups, key = self.key.split("/")
        for group in groups:
            row = row.get(group) or {}
        return row.get(key)

    def store(self, row, value):
        *groups, key = self.key.split("/")
        for group in groups:
            row = row.setdefault(group, {})
        row[key] = value

    def cell(self, row):
        value = self.value(row)
        if value is None:
            return "-"
        return self.render(value) if self.render else format(value, self.format)


def _stat(key):
    """A statistic the training strategy reported (see strategies.Trained.stats)."""
    return lambda m: m.stats.get(key)


def _score(key):
    """A figure of evaluation.classification_report on the test set."""
    return lambda m: m.report[key]


def _worst_class(m):
    worst = worst_class_recall(m.recalls)
    return None if worst is None else {"class": worst[0], "recall": worst[1]}


def _robustness(condition):
    return lambda m: m.robustness[condition]


# Column titles of measure.ROBUSTNESS, the perturbed test conditions.
ROBUSTNESS_TITLES = {"text_missing": "text missing", "image_missing": "image missing",
                     "word_dropout_0.5": "words -50%", "image_noise_0.1": "noise 0.1",
                     "image_noise_0.3": "noise 0.3"}

METRICS = (
    Metric("test_accuracy", "test acc", ".4f", _score("accuracy")),
    # Predictions that say nothing about the inputs: flagged in results.md and on the console.
    Metric("degenerate", "degenerate", "", lambda m: m.degenerate, optional=True,
           render=lambda reason: "**DEGENERATE**"),
    Metric("macro_precision", None, ".4f", _score("macro_precision")),
    Metric("macro_recall", None, ".4f", _score("macro_recall")),
    Metric("macro_f1", "macro-F1", ".4f", _score("macro_f1")),
    # What each modality buys the row, beside its accuracy: accuracy lost when it is
    # blanked (modality laziness shows as a fused row whose image adds nothing).
    Metric("contribution/image", "image adds", "+.3f", lambda m: m.contribution("image")),
    Metric("contribution/text", "text adds", "+.3f", lambda m: m.contribution("text")),
    # What the minority classes get: each class's test recall, and the lowest one in results.md.
    Metric("per_class_recall", None, "", lambda m: m.recalls),
    Metric("worst_class", "worst class", "", _worst_class,
           render=lambda worst: f"{worst['class']} {worst['recall']:.3f}"),
    Metric("params", "params", ",", lambda m: int(m.model.count_params())),
    Metric("epochs", "epochs", "d", _stat("epochs")),
    Metric("batch_size", "batch", "d", _stat("batch_size")),  # None: not trained in batches
    Metric("train_seconds", "train s", ".1f", _stat("train_seconds")),
    Metric("train_samples", None, "d", _stat("train_samples"), optional=True),
    # The per-class weights of a class-weighted fit (--class-weight), else left out.
    Metric("class_weights", None, "", _stat("class_weights"), optional=True),
    Metric("train_samples_per_second", "samples/s", ".0f", _stat("train_samples_per_second")),
    # The median epoch's rate, where every epoch was timed (see curve.EpochCurve.exclude_from).
    Metric("median_epoch_samples_per_second", None, ".0f", _stat("median_epoch_samples_per_second"),
           optional=True),
    Metric("predict_ms_per_sample", "predict ms/sample", ".3f",
           lambda m: measure.predict_ms_per_sample(m.model, m.model_features)),
    Metric("latency_ms_p50", "p50 ms", ".2f", lambda m: measure.latency_p50_ms(m.model, m.model_features)),
    *(Metric(f"robustness/{c}", ROBUSTNESS_TITLES[c], ".3f", _robustness(c)) for c in measure.ROBUSTNESS),
    # The modality shares (exact Shapley values: mmkeras.explain), beside the robustness.
    Metric("modality_share/image", "image share", ".2f", lambda m: m.shares and m.shares["image_share"],
           optional=True),
    Metric("modality_share/text", None, ".2f", lambda m: m.shares and m.shares["text_share"], optional=True),
    # A warm-started fused row: its fusion recipe, the time it spent beyond gradient steps,
    # and the product-of-experts weights it fitted (recipe "experts").
    Metric("fusion_recipe", "recipe", "", _stat("recipe"), optional=True),
    Metric("recipe_seconds", None, ".1f", _stat("recipe_seconds"), optional=True),
    Metric("expert_weights", None, "", _stat("expert_weights"), optional=True),
    # Recipes "distill" / "ogm_ge": the final feature distance to the teachers, the final
    # modulation coefficients; and a speed-run image row's test-time augmentation.
    Metric("distill_distance", None, "", _stat("distill_distance"), optional=True),
    Metric("modulation", None, "", _stat("modulation"), optional=True),
    Metric("tta", None, "", _stat("tta"), optional=True),
    # A fused row whose frozen branches ran once (mmkeras.frozen_features): seconds, bytes, cut tensors.
    Metric("frozen_cache", None, "", _stat("frozen_cache"), optional=True),
    Metric("confusion_matrix", None, "", lambda m: confusion_matrix(m.test_y, m.predictions,
                                                                    m.num_classes).tolist()),
)



def columns():
    """The metrics with a results.md column, in METRICS order (after "model" and "family")."""
    return [m for m in METRICS if m.title]


def measure_row(measured):
    """{key: value} of every metric (nested where the key says so) for one trained row."""
    row = {}
    for metric in METRICS:
        value = metric.compute(measured)
        if value is not None or not metric.optional:
            metric.store(row, value)
    return row
