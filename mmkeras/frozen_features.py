"""Training only what trains: frozen branch features computed once, not every step.

A fused model warm-started from trained unimodal models keeps its borrowed branches frozen
(the "frozen" and "experts" fusion recipes): every epoch, every step runs the same frozen
image network (and, under "experts", the same frozen BiLSTM) forward over the same images,
and only the fusion layer and the head learn. `split_frozen(model)` cuts the functional
graph where the frozen part ends: an *extractor* (the model's inputs -> the frozen tensors
the trainable layers read) and a *trainable head* (those tensors -> the model's outputs,
the very same layer objects, so training the head trains the model). `fit_frozen_cached`
runs the extractor once over the train and validation splits and fits the head on the
cached features: on 2 CPU cores a warm-started fused row's epoch drops from a forward
pass of the image network to a pass over a few vectors.

What changes: the frozen part runs in inference mode once, so layers without weights that
act only in training (dropout, augmentation) inside it do not act while the head trains.
Where the cut would fall after such layers on a raw input (a trainable image branch behind
its augmentation: early fusion, a fine-tuning phase) or where the cache would exceed
`max_bytes`, `split_frozen` returns None and the caller trains the whole model as usual.
A frozen tensor that carries a Keras mask (a token sequence that attention reads) is never
cut: its frozen layers run in the head from the raw ids, and the rest is cached. Callbacks
see the whole model (the benchmark's per-epoch test accuracy and best-epoch restore read
and set it).
"""

import dataclasses
import time
import warnings

import keras
import numpy as np

from mmkeras import prediction_memo, training
from mmkeras.data.pipeline import make_dataset
from mmkeras.prediction_memo import frozen_part, has_weights, merges, tensor_name

# A cache above this many bytes (train + validation features) is not built: the caller
# trains the whole model instead. 2 GiB: CIFAR-10's 50,000 pairs with 4x4x256 image maps
# and 24-step BiLSTM sequences stay below it; a 2-million-pair set does not.
DEFAULT_MAX_BYTES = 2 * 1024**3


class FrozenSplit:
    """The two halves of a model cut at its frozen frontier (see `split_frozen`)."""

    def __init__(self, model, extractor, head, cached):
        self.model, self.extractor, self.head = model, extractor, head
        self.cached = cached  # the head's input names computed by the extractor (not raw inputs)
        self._parts = None

    def parts(self):
        """One model per cut tensor (prediction_memo.frozen_part): what the memo shares
        between rows that cut some of the same tensors."""
        if self._parts is None:
            self._parts = [frozen_part(self.extractor.input, t) for t in self.extractor.output.values()]
        return self._parts

    def features(self, features, batch_size=256):
        """The head's inputs for a features dict: the cut tensors, computed, and the raw
        inputs the trainable layers read."""
        if prediction_memo.current() is None:  # one pass of the whole extractor
            out = training.predict_outputs(self.extractor, features, batch_size=batch_size)
        else:  # tensor by tensor through the run's memo: rows that cut the same tensors share them
            out = {}
            for part in self.parts():
                out.update(training.predict_outputs(part, features, batch_size=batch_size))
        return self.head_inputs(out, features)

    def head_inputs(self, computed, features):
        """The head's inputs from the cut tensors `computed` {name: array} and the raw
        `features` the trainable layers read."""
        raw = {k: features[k] for k in self.head.input if k not in computed}
        return {**{name: np.asarray(value) for name, value in computed.items()}, **raw}

    def bytes_per_example(self):
        return sum(int(np.prod(t.shape[1:])) * np.dtype(t.dtype).itemsize for t in self.extractor.outputs)


def split_frozen(model):
    """(FrozenSplit) of a functional `model` whose frozen layers compute something the
    trainable layers read; None when nothing is worth caching or the cut is unsafe (see the
    module docstring)."""
    # Only a functional graph can be cut (a subclassed model, e.g. a training wrapper, cannot).
    if type(model).__name__ != "Functional" or not isinstance(model.input, dict):
        return None
    # id(tensor) -> computable without trainable weights / depends on frozen weights / passed
    # a weightless layer that acts differently in training (dropout, augmentation).
    frozen, derived, random = {}, {}, {}

    def visit(tensor):
        key = id(tensor)
        if key in frozen:
            return frozen[key]
        operation, node_index, _ = tensor._keras_history
        if isinstance(operation, keras.layers.InputLayer):
            frozen[key], derived[key], random[key] = True, False, False
            return True
        node = operation._inbound_nodes[node_index]
        parents = [visit(t) for t in node.input_tensors]
        frozen[key] = all(parents) and not getattr(operation, "trainable_weights", None)
        derived[key] = frozen[key] and (has_weights(operation) or any(derived[id(t)] for t in node.input_tensors))
        random[key] = (not has_weights(operation) and getattr(operation, "_call_has_training_arg", False)) \
            or any(random[id(t)] for t in node.input_tensors)
        return frozen[key]

    outputs = keras.tree.flatten(model.output)
    for tensor in outputs:
        visit(tensor)
    frontier = {}  # id -> tensor: frozen tensors read by a layer that trains (or a model output)
    seen = set()

    def walk(tensor):
        if id(tensor) in seen:
            return
        seen.add(id(tensor))
        # A frozen tensor that carries a Keras mask (a frozen text branch's token sequence,
        # read by attention) cannot be a head input: the mask would be lost. The cut moves
        # back to where the mask starts (the raw ids), so the frozen layers after it run in
        # the head, still frozen, and the other branch is cached all the same.
        # Nor a weightless merge of the branches (prediction_memo.merges): cut before it, the
        # branches' features are the same memo entries in every fused row that borrows them.
        if frozen[id(tensor)] and getattr(tensor, "_keras_mask", None) is None and not merges(tensor):
            frontier[id(tensor)] = tensor
            return
        operation, node_index, _ = tensor._keras_history
        for parent in operation._inbound_nodes[node_index].input_tensors:
            walk(parent)

    for tensor in outputs:
        walk(tensor)
    tensors = list(frontier.values())
    if not any(derived[id(t)] for t in tensors):
        return None  # nothing frozen with weights in front of the trainable layers: nothing to save
    cached = [t for t in tensors if not isinstance(t._keras_history[0], keras.layers.InputLayer)]
    for t in cached:
        if not derived[id(t)] and random[id(t)]:
            return None  # a raw input through augmentation into a trainable layer: it must keep acting
        if getattr(t, "_keras_mask", None) is not None:
            return None  # the head's new inputs would lose the mask
    names = {id(t): tensor_name(t) for t in tensors}
    cut = {id(t) for t in cached}
    raw_inputs = {names[id(t)]: t for t in tensors if id(t) not in cut}
    with warnings.catch_warnings():  # keys that are not the (automatic) names of the cut tensors
        warnings.simplefilter("ignore", UserWarning)
        extractor = keras.Model(model.input, {names[id(t)]: t for t in cached}, name=f"{model.name}_frozen")
        head = keras.Model({**{names[id(t)]: t for t in cached}, **raw_inputs}, model.output,
                           name=f"{model.name}_head")
    return FrozenSplit(model, extractor, head, [names[id(t)] for t in cached])


class _WholeModelCallbacks(keras.callbacks.Callback):
    """Runs `callbacks` against the whole model while Keras fits its head: they read and
    set the whole model's weights (the same variables) and may stop the fit. Their
    `on_train_begin` runs at construction, before the features are extracted: the
    extraction is part of the training they time."""

    def __init__(self, callbacks, model):
        super().__init__()
        self.inner = keras.callbacks.CallbackList(list(callbacks), model=model)
        self.whole = model
        self.inner.on_train_begin()

    def set_params(self, params):  # the fit's epochs and steps, which callbacks may read
        super().set_params(params)
        self.inner.set_params(params)

    def _forward(self, name):
        def call(*args, **kwargs):
            if name == "on_train_begin":
                return  # already run
            getattr(self.inner, name)(*args, **kwargs)
            if getattr(self.whole, "stop_training", False):
                self.model.stop_training = True
        return call

    def __getattribute__(self, name):
        if name.startswith("on_") and name != "on_":
            return object.__getattribute__(self, "_forward")(name)
        return object.__getattribute__(self, name)


def cached_datasets(split, datasets, batch_size):
    """`datasets` with its train and validation pipelines replaced by the head's inputs of
    `split` (extracted once, in order), shuffled and batched as the originals."""
    pipelines = {}
    for name in ("train", "validation"):
        if not datasets.size(name):
            pipelines[name] = datasets.validation
            continue
        features, labels = training.split_arrays(datasets, name)
        pipelines[name] = make_dataset(split.features(features), labels, batch_size=batch_size,
                                       shuffle=name == "train", seed=datasets.seed)
    return dataclasses.replace(datasets, **pipelines)


def fit_frozen_cached(model, datasets, *, epochs, learning_rate, callbacks=None, verbose="auto",
                      max_bytes=DEFAULT_MAX_BYTES, **fit_kwargs):
    """Fit `model`'s trainable layers on cached frozen features (see the module docstring),
    compiled as `training.compile_model` with `learning_rate`. Returns (history, stats) as
    `training.fit` does, stats with "frozen_cache": {"seconds", "bytes", "tensors"}; None
    (nothing done) when the model has no safe cut or the cache would exceed `max_bytes`."""
    split = split_frozen(model)
    n = datasets.size("train") + datasets.size("validation")
    if split is None or split.bytes_per_example() * n > max_bytes:
        return None
    wrapped = [_WholeModelCallbacks(callbacks, model)] if callbacks else None
    start = time.perf_counter()
    cached = cached_datasets(split, datasets, datasets.batch_size)
    seconds = time.perf_counter() - start
    training.compile_model(split.head, learning_rate=learning_rate)
    history, stats = training.fit(split.head, cached, epochs=epochs, callbacks=wrapped, verbose=verbose,
                                  **fit_kwargs)
    stats = dict(stats, train_seconds=stats["train_seconds"] + seconds,
                 frozen_cache={"seconds": seconds, "bytes": split.bytes_per_example() * n, "tensors": split.cached})
    stats["train_samples_per_second"] = stats["train_samples"] / stats["train_seconds"]
    return history, stats
