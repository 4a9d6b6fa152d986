"""The benchmark: train and measure every selected model on one paired dataset."""

import dataclasses
import functools
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

import mmkeras
from mmkeras import distribute, training
from mmkeras.bench import measure, pretrain, recipe, report
from mmkeras.models import zoo
from mmkeras.data import (load_paired, load_paired_cifar, make_datasets, make_synthetic)
from mmkeras.data.pipeline import with_modality_dropout
from mmkeras.ensembles import build_ensemble, ensemble_names
from mmkeras.evaluation import classification_report, confusion_matrix

BUILTIN_DATA = ("cifar10", "cifar100", "synthetic")


# The default run (see README, "What the default run trains"): the seed recipe and the seed
# graph through the package pipeline, one from-scratch fused model, the strong image and
# text branches once each, every fusion family warm-started from them, every ensemble.
DEFAULT_MODELS = "seed_concat,gmu_cnn_lstm,image_resnet9,text_bilstm,*_resnet9_bilstm,ensemble_*"
# The fused model trained from scratch whose time to the recipe's accuracy is the headline.
DEFAULT_FUSED = "gmu_cnn_lstm"


@dataclasses.dataclass
class BenchConfig:
    data: str = "cifar10"
    models: str = DEFAULT_MODELS
    epochs: int = None  # None: each row's default (recipe rows 10, others DEFAULT_EPOCHS)
    batch_size: int = None  # None: each row's default (see row_batch_size); recipe rows keep 32
    seed: int = 0
    out: str = "runs/bench"
    quick: bool = False
    modality_dropout: float = 0.0
    export: bool = False
    image_init: str = None
    text_init: str = None
    tensorboard: str = None
    vocab_size: int = 2000
    sequence_length: int = 24
    warm_start: bool = True  # fused rows start from this run's unimodal rows (frozen image branch)
    fused_epochs: int = 1  # epochs of a warm-started fused row
    robustness_samples: int = 2000  # seeded test subset for the five perturbed evaluations
    default_fused: str = DEFAULT_FUSED
    pretrain_image: str = None  # cifar10, cifar100 or an image-folder DIR: see pretrain.py
    pretrain_model: str = None  # image-only model to pretrain; None: the selected fused rows' branch
    pretrain_epochs: int = None
    augment: bool = True  # random flips and shifts for image-consuming rows
    learning_rate: float = 2e-3  # peak of a cosine decay over each row's steps
    strategy: str = "default"  # mmkeras.distribute.get_strategy name; models are built in its scope
    # Dtype policy of image-only rows and pretraining (see training.resolve_precision); the
    # other rows, the recipe and every fused model stay float32.
    image_precision: str = "auto"
    callbacks: list = dataclasses.field(default_factory=list)


# Epochs per family when --epochs is not given. The image row is the long one: 18 epochs
# of image_resnet9 take about 24-29 minutes on 2 CPU cores with native bf16 (see
# image_precision), about 37 in float32.
DEFAULT_EPOCHS = {"image": 18, "text": 10, "fused": 8}
# Batch size when --batch-size is not given. The seed graph (one small convolution, one
# LSTM) is overhead-bound on 2 cores: steady CIFAR-10 epochs (45,000 pairs, flips and
# shifts, validation) took 9.7-10.4 s at batch 256 and 8.6-8.9 s at 512 (2026-11-23); an
# earlier train-only microbenchmark gave 4,711 samples/s at 128 and 5,648 at 256. The
# larger models gain nothing from bigger batches (image_resnet9: 500 samples/s at 128 and 256).
DEFAULT_BATCH_SIZE = 128
SEED_BATCH_SIZE = 512
QUICK = dict(n_train=1000, n_test=300, epochs=1)


def load_data(spec, seed=0, quick=False):
    """A PairedData from 'cifar10', 'cifar100', 'synthetic' or a paired-format directory."""
    if spec == "synthetic":
        data = make_synthetic(n_train=4000, n_test=1000, seed=seed)
    elif spec in ("cifar10", "cifar100"):
        data = load_paired_cifar(spec, seed=seed)
    elif os.path.isdir(spec):
        data = load_paired(spec)
    else:
        raise ValueError(f"Unknown --data {spec!r}: expected one of {', '.join(BUILTIN_DATA)} or a "
                         "directory holding train.npz, test.npz and classes.txt.")
    if quick:  # a seeded subset, for smoke runs
        rng = np.random.default_rng(seed)
        data.train = data.train.take(np.sort(rng.permutation(len(data.train))[: QUICK["n_train"]]))
        data.test = data.test.take(np.sort(rng.permutation(len(data.test))[: QUICK["n_test"]]))
    return data


def select_rows(pattern):
    """Rows to run: registered models matching `pattern` (comma-separated wildcards), plus a
    seed-recipe reference row `recipe_<name>` for each selected seed model."""
    parts = [p.strip() for p in pattern.split(",")]
    names = sorted({n for p in parts for n in mmkeras.list_models(p) + ensemble_names(p)})
    if not names:
        raise ValueError(f"No registered model or ensemble matches {pattern!r}; available: "
                         f"{', '.join(mmkeras.list_models() + ensemble_names())}.")
    # Unimodal rows first: fused rows warm-start from them, ensembles combine them.
    order = {"image": 0, "text": 1, "fused": 2, "ensemble": 3}
    names = sorted(names, key=lambda n: (order[_family(n)], n))
    return [f"recipe_{n}" for n in names if n in recipe.KINDS] + names


def row_batch_size(name, config):
    """The batch size a package row trains with: --batch-size, else the seed rows'
    SEED_BATCH_SIZE, else DEFAULT_BATCH_SIZE. (Recipe rows always use the recipe's 32.)"""
    if config.batch_size is not None:
        return config.batch_size
    return SEED_BATCH_SIZE if name in recipe.KINDS else DEFAULT_BATCH_SIZE


def _family(name):
    return "ensemble" if name in ensemble_names() else mmkeras.model_family(name)


def _branches_of(name):
    """{"image": branch, "text": branch} of a registered preset (the ones it uses)."""
    if name in zoo.UNIMODAL_PRESETS:
        p = zoo.UNIMODAL_PRESETS[name]
        return {p["modality"]: p["branch"]}
    p = zoo.FUSED_PRESETS.get(name, {})
    return {k: p[f"{k}_branch"] for k in ("image", "text") if f"{k}_branch" in p}


def _load_source(path):
    """The saved model at `path` (None: None), loaded once: every fused row borrows the same
    two unimodal models, and a .keras load costs a second or two."""
    return None if path is None else _load_saved(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=8)
def _load_saved(path, mtime):  # mtime in the key: a file rewritten by a new run is read again
    return keras.saving.load_model(path)


class EpochCurve(keras.callbacks.Callback):
    """Records (training seconds so far, validation and test accuracy) after every epoch.

    Its own test evaluations are timed apart and left out of `seconds` and, through
    `exclude_from`, of the row's train_seconds.
    """

    def __init__(self, features, labels):
        super().__init__()
        self.features, self.labels, self.curve = features, labels, []
        self.predictions = None  # test-set class ids after the last epoch

    def on_train_begin(self, logs=None):
        self.start, self.eval_seconds = time.perf_counter(), 0.0

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start - self.eval_seconds
        eval_start = time.perf_counter()
        pred = self.predictions = training.predict_proba(self.model, self.features).argmax(-1)
        logs = logs or {}
        self.curve.append({"epoch": epoch + 1, "seconds": seconds,
                           "val_accuracy": float(logs.get("val_accuracy", logs.get("val_label_accuracy", np.nan))),
                           "test_accuracy": float(np.mean(pred == self.labels))})
        self.eval_seconds += time.perf_counter() - eval_start
        self.start += time.perf_counter() - eval_start  # evaluation time is not training time

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


def _callbacks(config, name, extra):
    cbs = list(config.callbacks) + list(extra)
    if config.tensorboard:
        cbs.append(keras.callbacks.TensorBoard(os.path.join(config.tensorboard, name)))
    return cbs


def run_row(name, ds, config, warm=None, pretrained=None):
    """Train and measure one row; returns its results dict (and the trained model).

    warm: {(modality, branch): .keras path} of unimodal models trained earlier in the run.
    pretrained: the same for models trained by --pretrain-image; they win over `warm`.
    """
    keras.utils.set_random_seed(config.seed)
    test_x, test_y = ds.arrays["test"]
    if name in ensemble_names():
        family = "ensemble"
        members = [(warm or {}).get(k) for k in ("best_image", "best_text")]
        if None in members:
            raise ValueError(f"Row {name!r} combines this run's best image-only and text-only rows: "
                             "select at least one of each (e.g. --models 'image_*,text_*,ensemble_*').")

        def prepare(features):
            return features

        start = time.perf_counter()
        model = build_ensemble(members, name, validation_data=ds)
        seconds = time.perf_counter() - start
        curve, history = EpochCurve(test_x, test_y), {}
        stats = {"train_seconds": seconds, "epochs": 0, "batch_size": None,
                 "train_samples_per_second": ds.size("validation") / seconds}
    elif name.startswith("recipe_"):
        base = name[len("recipe_"):]
        family = recipe.KINDS[base]
        model = recipe.build_recipe_model(base, num_classes=ds.num_classes, image_shape=ds.image_shape,
                                          vocab_size=ds.vocab_size)
        # The recipe's own arrays: train + validation re-joined (it splits 80/20 itself), in
        # a seeded random order as keras.datasets delivers CIFAR. Keras takes the *last* 20%
        # as validation without shuffling: on class-sorted arrays (a folder of class folders)
        # it would never train on the last classes.
        order = np.random.default_rng(config.seed).permutation(ds.size("train") + ds.size("validation"))
        train_x = {k: np.concatenate([ds.arrays["train"][0][k], ds.arrays["validation"][0][k]])[order]
                   for k in ("image", "text")}
        train_y = np.concatenate([ds.arrays["train"][1], ds.arrays["validation"][1]])[order]
        train_x["text"] = recipe.pre_pad(train_x["text"])

        def prepare(features):  # perturbations act on right-padded ids; the recipe reads pre-padded
            return dict(features, text=recipe.pre_pad(features["text"]))

        curve = EpochCurve(prepare(test_x), test_y)
        fitted, stats = recipe.fit_recipe(model, train_x, train_y, epochs=config.epochs,
                                          callbacks=_callbacks(config, name, [curve]))
        stats = dict(curve.exclude_from(stats), batch_size=recipe.RECIPE["batch_size"])
        history = fitted.history
    else:
        family = mmkeras.model_family(name)

        def prepare(features):
            return features

        kwargs = ds.model_kwargs()
        used = _branches_of(name)
        if config.augment and "image" in used:
            kwargs["image_augmentation"] = "flip_translate"
        epochs = config.epochs or DEFAULT_EPOCHS[family]
        if family == "fused":
            warm = warm if config.warm_start else {}
            inits = {m: getattr(config, f"{m}_init") or (pretrained or {}).get((m, used.get(m)))
                     or (warm or {}).get((m, used.get(m))) for m in ("image", "text")}
            # Early fusion feeds text channels into the image branch's first convolution:
            # that branch must keep learning (it starts as the image row, see transfer_weights).
            kwargs.update(image_init=_load_source(inits["image"]), text_init=_load_source(inits["text"]),
                          freeze_image=inits["image"] is not None and zoo.FUSED_PRESETS.get(name, {}).get("fusion") != "early")
            warm_started = {m: os.path.splitext(os.path.basename(p))[0] for m, p in inits.items() if p}
            if inits["image"] is not None or inits["text"] is not None:
                epochs = config.fused_epochs
        with training.precision_policy(config.image_precision if family == "image" else "float32"):
            model = mmkeras.create_model(name, **kwargs)
        batch_size = row_batch_size(name, config)
        row_ds = ds.with_batch_size(batch_size)  # fresh: its data order owes nothing to earlier rows
        training.compile_model(model, learning_rate=training.cosine_schedule(
            config.learning_rate, epochs, ds.size("train"), batch_size))
        curve = EpochCurve(test_x, test_y)
        train = with_modality_dropout(row_ds.train, config.modality_dropout, config.seed)
        fitted, stats = training.fit(model, dataclasses.replace(row_ds, train=train), epochs=epochs,
                                     callbacks=_callbacks(config, name, [curve]), verbose=2)
        stats = dict(curve.exclude_from(stats), batch_size=batch_size)
        history = fitted.history

    def predict(features):
        return training.predict_proba(model, prepare(features)).argmax(-1)

    # The curve predicted the test set after the last epoch: the trained model's predictions
    # (unless a user callback, e.g. EarlyStopping, changed the weights after it).
    reuse = curve.predictions is not None and not config.callbacks
    pred = curve.predictions if reuse else predict(test_x)
    # Robustness on a seeded subset: five perturbed passes over the full test set would
    # cost more than some rows' training.
    subset = np.sort(np.random.default_rng(config.seed).permutation(len(test_y))[: config.robustness_samples])
    subset_x = {k: v[subset] for k, v in test_x.items()}
    row = {"name": name, "family": family,
           **{("test_accuracy" if k == "accuracy" else k): v
              for k, v in classification_report(test_y, pred, ds.num_classes).items()},
           "params": int(model.count_params()), **stats,
           "predict_ms_per_sample": measure.predict_ms_per_sample(model, prepare(test_x)),
           "latency_ms_p50": measure.latency_p50_ms(model, prepare(test_x)),
           "robustness": measure.robustness(predict, subset_x, test_y[subset], config.seed),
           "confusion_matrix": confusion_matrix(test_y, pred, ds.num_classes).tolist(),
           "curve": curve.curve, "history": {k: [float(v) for v in vs] for k, vs in history.items()}}
    if family == "fused" and not name.startswith("recipe_"):
        row["warm_start"] = warm_started  # modality -> the row (or file) its branch came from
    return row, model


def time_to_accuracy(rows, default_fused=DEFAULT_FUSED, pretrained=()):
    """Seconds each row took to reach the seed recipe's final test accuracy (None: never).

    A warm-started row's own seconds leave out the training of the unimodal rows it
    started from; `models_with_warm_start` adds them back (the honest total). The
    `default_fused` entry is the headline: that model against the recipe's training time.
    """
    ref = next((r for r in rows if r["name"] == "recipe_seed_concat"), None)
    if ref is None:
        return {}
    target, by_name = ref["test_accuracy"], {r["name"]: r for r in rows}
    by_name.update({os.path.splitext(os.path.basename(p["path"]))[0]: p for p in pretrained})
    out = {"target": target, "recipe_seconds": ref["train_seconds"], "models": {},
           "models_with_warm_start": {}}
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
    for n in recipe.KINDS:
        if n not in by_name or f"recipe_{n}" not in by_name:
            continue
        ours, ref = by_name[n], by_name[f"recipe_{n}"]
        out[n] = {"samples_per_second_ratio": ours["train_samples_per_second"] / ref["train_samples_per_second"],
                  "accuracy_delta": ours["test_accuracy"] - ref["test_accuracy"]}
        key = "median_epoch_samples_per_second"
        if key in ours and key in ref:
            out[n]["median_epoch_ratio"] = ours[key] / ref[key]
    return out


def run(config):
    """Run the benchmark; writes OUT/results.json, results.md, plots; returns the results."""
    # First: multi-worker collectives and device lists must be set before TF starts its devices.
    strategy = distribute.get_strategy(config.strategy)
    os.makedirs(os.path.join(config.out, "rows"), exist_ok=True)
    if config.seed is not None:
        tf.config.experimental.enable_op_determinism()  # same seed, same CPU: same metrics
    data = load_data(config.data, config.seed, config.quick)
    if config.quick and config.epochs is None:
        config.epochs = QUICK["epochs"]
    ds = make_datasets(data, batch_size=config.batch_size or DEFAULT_BATCH_SIZE, vocab_size=config.vocab_size,
                       sequence_length=config.sequence_length, seed=config.seed)
    names = select_rows(config.models)
    pretrained, pretrain_info = _pretrain(config, ds, names)
    rows, warm = [], {}
    best = best_available = None  # --export: (row, model or .keras path or None)
    for name in tqdm(names, desc="benchmark", unit="model"):
        path = os.path.join(config.out, "rows", f"{name}.json")
        saved = os.path.join(config.out, "rows", f"{name}.keras")
        if os.path.isfile(path):  # finished in an earlier run: resume
            with open(path, encoding="utf-8") as f:
                row, model = json.load(f), None
        else:
            print(f"\n== {name}")
            start = time.perf_counter()
            with strategy.scope():  # models, optimizers and metrics belong to the strategy
                row, model = run_row(name, ds, config, warm, pretrained)
            row["wall_seconds"] = time.perf_counter() - start  # training + every measurement
            if row["family"] in ("image", "text") and not name.startswith("recipe_"):
                model.save(saved)  # later fused rows (and resumed runs) warm-start from it
            report.write_json(path, row)
        rows.append(row)
        if os.path.isfile(saved):
            for modality, branch in _branches_of(name).items():
                warm.setdefault((modality, branch), saved)
                best_key = f"best_{modality}"
                if row["test_accuracy"] > warm.get(best_key + "_accuracy", -1.0):
                    warm[best_key], warm[best_key + "_accuracy"] = saved, row["test_accuracy"]
        if config.export and not name.startswith("recipe_"):
            # A resumed row's model is on disk only if it is unimodal.
            model = model if model is not None else (saved if os.path.isfile(saved) else None)
            if best is None or row["test_accuracy"] > best[0]["test_accuracy"]:
                best = (row, model)
            if model is not None and (best_available is None
                                      or row["test_accuracy"] > best_available[0]["test_accuracy"]):
                best_available = (row, model)
    export_info = _export_best(best, best_available, ds, data, config) if best else None
    results = {"dataset": data.name, "num_classes": ds.num_classes, "n_train": ds.size("train"),
               "n_test": ds.size("test"), "image_shape": list(ds.image_shape),
               "class_names": ds.class_names, "seed": config.seed, "models": rows,
               "robustness_samples": min(config.robustness_samples, ds.size("test")),
               "time_to_accuracy": time_to_accuracy(rows, config.default_fused, pretrain_info),
               "speedup": speedups(rows), "pretrain": pretrain_info, "export": export_info,
               # The whole run's cost, resumed parts included: rows, their measurements, pretraining.
               "wall_seconds": None if any("wall_seconds" not in r for r in rows)
               else sum(r["wall_seconds"] for r in rows) + sum(p["total_seconds"] for p in pretrain_info)}
    report.write_json(os.path.join(config.out, "results.json"), results)
    with open(os.path.join(config.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(report.results_markdown(results))
    report.plot_all(results, config.out)
    return results


def _pretrain(config, ds, names):
    """--pretrain-image: ({("image", branch): .keras path}, [info]) for the fused rows."""
    if not config.pretrain_image:
        return {}, []
    fused = [n for n in names if not n.startswith("recipe_") and _family(n) == "fused"]
    if not fused:
        raise ValueError("--pretrain-image warm-starts the image branch of fused rows, but "
                         f"--models {config.models!r} selects none.")
    used = sorted({_branches_of(n)["image"] for n in fused})
    models = [config.pretrain_model] if config.pretrain_model else [f"image_{b}" for b in used]
    for model_name in models:
        if mmkeras.model_family(model_name) != "image" or zoo.UNIMODAL_PRESETS[model_name]["branch"] not in used:
            raise ValueError(f"--pretrain-model {model_name!r} must be an image-only model whose branch a "
                             f"selected fused row uses: one of {', '.join(f'image_{b}' for b in used)}.")
    pretrained, infos = {}, []
    for model_name in models:
        print(f"\n== pretraining {model_name} on {config.pretrain_image}")
        info = pretrain.pretrain_image_model(
            model_name, config.pretrain_image, image_shape=ds.image_shape,
            out_dir=os.path.join(config.out, "pretrain"),
            epochs=config.pretrain_epochs or config.epochs or DEFAULT_EPOCHS["image"],
            batch_size=config.batch_size or DEFAULT_BATCH_SIZE, learning_rate=config.learning_rate,
            augment=config.augment,
            seed=config.seed, callbacks=_callbacks(config, f"pretrain_{model_name}", []),
            precision=config.image_precision)
        pretrained[("image", zoo.UNIMODAL_PRESETS[model_name]["branch"])] = info["path"]
        infos.append(info)
    return pretrained, infos


def _export_best(best, best_available, ds, data, config):
    """Export the best row's model (trained in this process, or a resumed unimodal row's
    .keras); when the best row was resumed without a saved model (fused rows, ensembles),
    the best row that has one, and say so. Returns what was exported."""
    if best_available is None:
        print("--export: no row of this run has a model to export (every finished row was "
              "resumed from an earlier run, and fused rows and ensembles are not saved): rerun "
              "with a fresh --out to export.")
        return None
    row, model = best_available
    note = None
    if row is not best[0]:
        note = (f"the best row, {best[0]['name']} ({best[0]['test_accuracy']:.4f}), was resumed from an "
                f"earlier run without a saved model; exported the best row that has one")
        print(f"--export: {note}.")
    if isinstance(model, str):
        model = keras.saving.load_model(model)
    from mmkeras.export import export_model

    path = os.path.join(config.out, "export", row["name"])
    export_model(model, path, vectorizer=ds.vectorizer, class_names=ds.class_names, dataset=data.name,
                 metrics={"test_accuracy": row["test_accuracy"]}, overwrite=True)
    return {"name": row["name"], "path": path, "test_accuracy": row["test_accuracy"], "note": note}
