"""The row metrics: ONE list, `METRICS`. Each entry says where its value lives in a row of
results.json, its results.md column, its format and how it is computed; the row, the
table and the tests follow the list, so a new metric is one new entry.
"""

import dataclasses
import functools
from typing import Callable

import numpy as np

from mmkeras.bench import measure
from mmkeras.evaluation import classification_report, confusion_matrix


class Measured:
    """What the metrics are computed from: a trained row (strategies.Trained) and the test set.

    Each quantity is computed once, when a metric first asks for it.
    """

    def __init__(self, trained, ds, config):
        self.trained, self.model, self.stats = trained, trained.model, trained.stats
        self.test_x, self.test_y = ds.arrays["test"]
        self.num_classes = ds.num_classes
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
    def model_features(self):
        """The test features as the model reads them (timings)."""
        return self.trained.prepare(self.test_x)

    @functools.cached_property
    def robustness(self):
        """Accuracy under each perturbation, on a seeded subset: five perturbed passes over the
        full test set would cost more than some rows' training."""
        subset = np.sort(np.random.default_rng(self.seed).permutation(len(self.test_y))[: self.robustness_samples])
        return measure.robustness(self.trained.predict, {k: v[subset] for k, v in self.test_x.items()},
                                  self.test_y[subset], self.seed)


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str  # its key in a row of results.json; "group/key" nests it (robustness/text_missing)
    title: str  # its results.md column; None: results.json only
    format: str  # format spec of its results.md cell
    compute: Callable  # Measured -> value
    optional: bool = False  # a None value is left out of the row (instead of written as null)

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
        return "-" if value is None else format(value, self.format)


def _stat(key):
    """A statistic the training strategy reported (see strategies.Trained.stats)."""
    return lambda m: m.stats.get(key)


def _score(key):
    """A figure of evaluation.classification_report on the test set."""
    return lambda m: m.report[key]


def _robustness(condition):
    return lambda m: m.robustness[condition]


# Column titles of measure.ROBUSTNESS, the perturbed test conditions.
ROBUSTNESS_TITLES = {"text_missing": "text missing", "image_missing": "image missing",
                     "word_dropout_0.5": "words -50%", "image_noise_0.1": "noise 0.1",
                     "image_noise_0.3": "noise 0.3"}

METRICS = (
    Metric("test_accuracy", "test acc", ".4f", _score("accuracy")),
    Metric("macro_precision", None, ".4f", _score("macro_precision")),
    Metric("macro_recall", None, ".4f", _score("macro_recall")),
    Metric("macro_f1", "macro-F1", ".4f", _score("macro_f1")),
    Metric("params", "params", ",", lambda m: int(m.model.count_params())),
    Metric("epochs", "epochs", "d", _stat("epochs")),
    Metric("batch_size", "batch", "d", _stat("batch_size")),  # None: not trained in batches
    Metric("train_seconds", "train s", ".1f", _stat("train_seconds")),
    Metric("train_samples", None, "d", _stat("train_samples"), optional=True),
    Metric("train_samples_per_second", "samples/s", ".0f", _stat("train_samples_per_second")),
    # The median epoch's rate, where every epoch was timed (see curve.EpochCurve.exclude_from).
    Metric("median_epoch_samples_per_second", None, ".0f", _stat("median_epoch_samples_per_second"),
           optional=True),
    Metric("predict_ms_per_sample", "predict ms/sample", ".3f",
           lambda m: measure.predict_ms_per_sample(m.model, m.model_features)),
    Metric("latency_ms_p50", "p50 ms", ".2f", lambda m: measure.latency_p50_ms(m.model, m.model_features)),
    *(Metric(f"robustness/{c}", ROBUSTNESS_TITLES[c], ".3f", _robustness(c)) for c in measure.ROBUSTNESS),
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
