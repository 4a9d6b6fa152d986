"""`EpochCurve`: the benchmark's per-epoch instrumentation (time, validation and test accuracy)."""

import time

import keras
import numpy as np

from mmkeras import training


class EpochCurve(keras.callbacks.Callback):
    """Records (training seconds so far, validation and test accuracy) after every epoch.

    Its own test evaluations are timed apart and left out of `seconds` and, through
    `exclude_from`, of the row's train_seconds.
    """

    def __init__(self, features, labels):
        super().__init__()
        self.features, self.labels, self.curve = features, labels, []
        self.predictions = None  # test-set class ids of the model as trained (after the last epoch)
        self.epoch_predictions = []  # test-set class ids after each epoch, in curve order

    def on_train_begin(self, logs=None):
        # The clock starts at the first fit and runs on through later ones: a fusion recipe's
        # second phase (and what it does between phases) is training time too.
        if not hasattr(self, "start"):
            self.start, self.eval_seconds = time.perf_counter(), 0.0

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start  # `start` moves past each evaluation
        eval_start = time.perf_counter()
        pred = self.predictions = training.predict_proba(self.model, self.features).argmax(-1)
        self.epoch_predictions.append(pred)
        logs = logs or {}
        self.curve.append({"epoch": epoch + 1, "seconds": seconds,
                           "val_accuracy": float(logs.get("val_accuracy", logs.get("val_label_accuracy", np.nan))),
                           "test_accuracy": float(np.mean(pred == self.labels))})
        self.eval_seconds += time.perf_counter() - eval_start
        self.start += time.perf_counter() - eval_start  # evaluation time is not training time

    def follow(self, stopper):
        """After a fit in which `stopper` (schedule.BestValidationStop) restored the weights of
        its best epoch: that epoch's predictions become the model's. Returns the best epoch's
        number in the curve (None: nothing was restored)."""
        if stopper.best_weights is None or not stopper.epochs_seen:
            return None
        index = len(self.curve) - stopper.epochs_seen + stopper.best_epoch
        self.predictions = self.epoch_predictions[index]
        return self.curve[index]["epoch"]

    def record_final(self, model, seconds):
        """A last point for a model that a recipe changed after its last epoch (the fusion
        recipe "experts" adds heads): its test accuracy after `seconds` of training in all;
        its predictions become the row's."""
        self.set_model(model)
        pred = self.predictions = training.predict_proba(model, self.features).argmax(-1)
        self.curve.append({"epoch": self.curve[-1]["epoch"] if self.curve else 0, "seconds": seconds,
                           "val_accuracy": None, "test_accuracy": float(np.mean(pred == self.labels)),
                           "stage": "recipe"})

    def exclude_from(self, stats):
        """`stats` of the fit this curve watched, without the curve's own evaluations: the
        benchmark's instrumentation is not training, and it costs the fast rows most."""
        seconds = stats["train_seconds"] - getattr(self, "eval_seconds", 0.0)
        samples = stats["train_samples"]
        out = dict(stats, train_seconds=seconds, train_samples_per_second=samples / seconds)
        # Steady state: the median epoch's rate. A shared host slows some epochs by up to
        # 2x; the median shows what the pipeline does when it is not slowed.
        ends = [0.0] + [c["seconds"] for c in self.curve]
        durations = np.diff(ends)
        if len(durations) and stats["epochs"] == len(durations):
            out["median_epoch_samples_per_second"] = samples / len(durations) / float(np.median(durations))
        return out
