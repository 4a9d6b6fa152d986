"""Predictions made once per run: a memo of what a model (and each frozen model nested in
it) answered for given input arrays.

Why: a benchmark run measures many models that contain the same trained model. Every
fused row of the `experts` recipe holds the image row's model whole (six test-time views)
beside its own head, and every ensemble holds both unimodal rows; each row then predicts
the same image model on the same test, robustness and validation arrays, and on 2 CPU
cores those passes cost several minutes per row. With a memo active, `predict` answers a
model it has seen on arrays it has seen from memory, and evaluates a model whose nested
frozen models read the raw inputs (or, while it trains, whose frozen part feeds its
trainable layers: borrowed branches) as: those parts through the memo, then only the
rest of the graph (a functional model cut at their outputs), never those parts again.

A model is recognised by what it computes, not by the Python object: its graph, each
operation's class, configuration (without names and trainable flags, which do not change
inference) and weights, and what each reads. Arrays are recognised by their bytes. A changed
weight or a changed pixel is a different key; the memo can only miss, never answer for
another model or other data. Answers equal `model.predict`'s up to float rounding (the
same layers on the same batches; tested).

Only `training.predict_proba` / `training.predict_outputs` consult the memo, and only
inside `active(memo)` (the benchmark's run); timings (`bench.measure`) never do.
"""

import collections
import contextlib
import hashlib
import json
import re
import warnings
import weakref

import keras
import numpy as np

# Bytes of memoised outputs kept (least recently used dropped first): a run's test,
# robustness and validation passes of all its models are far below it, and so are
# CIFAR-10's pooled branch features; one larger output is not kept at all.
DEFAULT_MAX_BYTES = 1024**3

_ACTIVE = []


@contextlib.contextmanager
def active(memo):
    """Within the block, `current()` is `memo` (predictions go through it)."""
    _ACTIVE.append(memo)
    try:
        yield memo
    finally:
        _ACTIVE.pop()


def current():
    """The active PredictionMemo, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


def _strip(config):
    """A config without the fields that do not change what a model computes."""
    if isinstance(config, dict):
        return {k: _strip(v) for k, v in config.items() if k != "trainable"}
    if isinstance(config, (list, tuple)):
        return [_strip(v) for v in config]
    return config


def _placeholder(value):
    return "<tensor>" if isinstance(value, keras.KerasTensor) else value


def _operation_signature(operation, memo):
    """What one graph operation computes: its class, its configuration (a nested model: its
    own signature) and the bytes of its weights."""
    if id(operation) in memo:
        return memo[id(operation)]
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(operation).__name__.encode())
    if isinstance(operation, keras.Model) and type(operation).__name__ == "Functional":
        digest.update(model_signature(operation).encode())
    else:
        try:
            config = dict(operation.get_config())
        except (NotImplementedError, TypeError, ValueError):
            config = {}
        config.pop("name", None)
        digest.update(json.dumps(_strip(config), sort_keys=True, default=str).encode())
        for weight in getattr(operation, "weights", ()):
            value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
            digest.update(str((value.shape, value.dtype.str)).encode())
            digest.update(value.data)
    memo[id(operation)] = digest.hexdigest()
    return memo[id(operation)]


def model_signature(model):
    """A digest of what `model` computes: its graph (each operation's class, configuration
    and weights, and what it reads), not its name or the names of its layers. A model that
    is not a functional graph: its class, configuration and weights."""
    if type(model).__name__ != "Functional":
        digest = hashlib.blake2b(digest_size=16)
        digest.update(_operation_signature(model, {}).encode())
        for weight in model.weights:
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).data)
        return digest.hexdigest()
    operations, tensors = {}, {}
    inputs = {id(t): name for name, t in (model.input.items() if isinstance(model.input, dict)
                                          else [(model.input.name, model.input)])}

    def tensor_signature(tensor):
        stack = [tensor]
        while stack:  # iteratively: deep graphs would overflow Python's recursion
            top = stack[-1]
            if id(top) in tensors:
                stack.pop()
                continue
            if id(top) in inputs:
                tensors[id(top)] = f"input:{inputs[id(top)]}:{top.shape}:{top.dtype}"
                stack.pop()
                continue
            operation, node_index, tensor_index = top._keras_history
            node = operation._inbound_nodes[node_index]
            missing = [t for t in node.input_tensors if id(t) not in tensors]
            if missing:
                stack.extend(missing)
                continue
            args = keras.tree.map_structure(_placeholder, (node.arguments.args, node.arguments.kwargs))
            digest = hashlib.blake2b(digest_size=16)
            for part in (_operation_signature(operation, operations), str(tensor_index), repr(args),
                         *(tensors[id(t)] for t in node.input_tensors)):
                digest.update(part.encode())
            tensors[id(top)] = digest.hexdigest()
            stack.pop()
        return tensors[id(tensor)]

    outputs = keras.tree.flatten_with_path(model.output)
    return hashlib.blake2b("|".join(f"{path}={tensor_signature(t)}" for path, t in outputs).encode(),
                           digest_size=16).hexdigest()


def array_signature(array):
    array = np.ascontiguousarray(np.asarray(array))
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str((array.shape, array.dtype.str)).encode())
    digest.update(array.data)
    return digest.hexdigest()


def tensor_name(tensor):
    """A name for a graph tensor that two models built alike give alike: its operation's name,
    node and index (a frozen part's output key, here and in mmkeras.frozen_features)."""
    operation, node_index, index = tensor._keras_history
    return operation.name if isinstance(operation, keras.layers.InputLayer) else \
        re.sub(r"\W", "_", f"{operation.name}_{node_index}_{index}")


def has_weights(operation):
    """Whether `operation` holds float weights (what a layer computes with). A counter
    (`AlternatingFlip`'s int epoch) is bookkeeping: a layer that holds only one is as
    weightless, and as random in training, as the augmentation it is."""
    return any("float" in str(w.dtype) for w in getattr(operation, "weights", ()) or ())


def merges(tensor):
    """Whether `tensor` is a weightless merge of several tensors (concatenate, add,
    multiply). A frozen part never ends on one: cut before it, the branches' features are
    the same tensors in every fused model that borrows them (one memo entry), and the
    merge costs nothing to recompute."""
    operation, node_index, _ = tensor._keras_history
    if isinstance(operation, keras.layers.InputLayer) or has_weights(operation):
        return False
    return len(operation._inbound_nodes[node_index].input_tensors) > 1


def frozen_part(inputs, tensor):
    """The model of `inputs` (a dict) -> {tensor_name(tensor): tensor}: one frozen tensor of a
    larger model as a model of its own, so that every model holding the same frozen part
    finds it in the memo under one key."""
    with warnings.catch_warnings():  # inputs it does not read; a key not the tensor's own name
        warnings.simplefilter("ignore", UserWarning)
        return keras.Model(inputs, {tensor_name(tensor): tensor}, name=f"frozen_{tensor_name(tensor)}")


def _input_names(model):
    return list(model.input.keys()) if isinstance(model.input, dict) else [model.input.name]


def _graph(model):
    """Every tensor of `model`'s graph, from its outputs back to its inputs."""
    seen, stack = {}, list(keras.tree.flatten(model.output))
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen[id(tensor)] = tensor
        operation, node_index, _ = tensor._keras_history
        if not isinstance(operation, keras.layers.InputLayer):
            stack.extend(operation._inbound_nodes[node_index].input_tensors)
    return list(seen.values())


def _frozen_tensors(model, tensors, inputs):
    """ids of the tensors of `model`'s graph computed without trainable weights from the raw
    inputs and depending on some weights (frozen branch features): the rest of the graph
    can read them from the memo. Not one that carries a Keras mask (a model input has none)."""
    frozen, derived = {}, {}
    for tensor in reversed(_topological(tensors)):
        if id(tensor) in inputs:
            frozen[id(tensor)], derived[id(tensor)] = True, False
            continue
        operation, node_index, _ = tensor._keras_history
        parents = operation._inbound_nodes[node_index].input_tensors
        frozen[id(tensor)] = all(frozen[id(t)] for t in parents) and not getattr(operation, "trainable_weights", None)
        derived[id(tensor)] = frozen[id(tensor)] and (has_weights(operation) or any(derived[id(t)] for t in parents))
    return {key for key, value in derived.items() if value
            and getattr(tensors[key], "_keras_mask", None) is None}


def _topological(tensors):
    """`tensors` (id -> tensor) ordered outputs first, every tensor before its parents."""
    order, state = [], {}
    for root in tensors.values():
        stack = [(root, False)]
        while stack:
            tensor, done = stack.pop()
            if done:
                order.append(tensor)
                continue
            if id(tensor) in state:
                continue
            state[id(tensor)] = True
            stack.append((tensor, True))
            operation, node_index, _ = tensor._keras_history
            if not isinstance(operation, keras.layers.InputLayer):
                stack.extend((t, False) for t in operation._inbound_nodes[node_index].input_tensors)
    return order[::-1]  # post-order reversed: consumers before what they read


class _Cut:
    """A functional model cut where memoisable parts end. `nodes` [(model, names)]: each
    part is a model of the raw inputs whose outputs (flattened; `names` None where the
    graph does not read one) the memo answers: a frozen nested model called once on raw
    inputs, and, for a model that trains, each frozen tensor its trainable layers read (a
    borrowed branch's features, as a model of its own: `frozen_part`). `rest` computes the
    outputs from those and the raw inputs still read."""

    def __init__(self, model):
        self.nodes, self.rest = [], None
        self.reads = _input_names(model)  # the inputs the outputs depend on (all, if unknown)
        if type(model).__name__ != "Functional" or not isinstance(model.input, dict):
            return
        inputs = {id(t): name for name, t in model.input.items()}
        tensors = {id(t): t for t in _graph(model)}
        calls = collections.Counter()  # layer id -> its calls in this graph
        for tensor in tensors.values():
            operation, node_index, _ = tensor._keras_history
            if id(tensor) not in inputs and tensor is operation._inbound_nodes[node_index].output_tensors[0]:
                calls[id(operation)] += 1
        read = {inputs[key] for key in tensors if key in inputs}
        self.reads = [n for n in self.reads if n in read]
        frozen = _frozen_tensors(model, tensors, inputs) if model.trainable_weights else set()

        def memoisable(operation, node_index):
            # A frozen nested model called once, on raw inputs only (test-time augmentation
            # calls its model on several views: it is memoised whole, not cut).
            if not isinstance(operation, keras.Model) or operation.trainable_weights or calls[id(operation)] != 1:
                return False
            node = operation._inbound_nodes[node_index]
            return bool(node.input_tensors) and all(id(t) in inputs for t in node.input_tensors)

        needed, cut, seen, nested, part = {}, {}, set(), {}, {}
        stack = list(keras.tree.flatten(model.output))
        while stack:  # from the outputs back to the raw inputs or a memoisable part
            tensor = stack.pop()
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if id(tensor) in inputs:
                needed[inputs[id(tensor)]] = tensor
                continue
            operation, node_index, tensor_index = tensor._keras_history
            if memoisable(operation, node_index):
                index = nested.setdefault((id(operation), node_index), (len(nested), operation))[0]
                cut[f"memo_{index}_{tensor_index}"] = tensor
            elif id(tensor) in frozen and not merges(tensor):
                name = tensor_name(tensor)
                part[name] = cut[name] = tensor
            else:
                stack.extend(operation._inbound_nodes[node_index].input_tensors)
        if not cut:
            return
        for (_, node_index), (index, layer) in sorted(nested.items(), key=lambda c: c[1][0]):
            count = len(layer._inbound_nodes[node_index].output_tensors)
            self.nodes.append((layer, [f"memo_{index}_{j}" if f"memo_{index}_{j}" in cut else None
                                       for j in range(count)]))
        for name in sorted(part):  # one model per frozen tensor: rows that share it share the entry
            self.nodes.append((frozen_part(model.input, part[name]), [name]))
        # An output that is itself cut out is taken from the memo as it is (Keras cannot
        # build a model one of whose inputs is also an output).
        names = {id(t): name for name, t in cut.items()}
        self.structure = model.output
        self.outputs = [names.get(id(t)) for t in keras.tree.flatten(model.output)]
        computed = [t for t in keras.tree.flatten(model.output) if id(t) not in names]
        if computed:
            with warnings.catch_warnings():  # input keys that are not the tensors' automatic names
                warnings.simplefilter("ignore", UserWarning)
                self.rest = keras.Model({**needed, **cut}, computed, name=f"{model.name}_rest")

    def assemble(self, rest_outputs, values):
        """The model's outputs from the rest's (a list) and the memoised `values` {name: array}."""
        rest_outputs = iter(rest_outputs)
        flat = [values[name] if name is not None else next(rest_outputs) for name in self.outputs]
        return keras.tree.pack_sequence_as(self.structure, flat)


class PredictionMemo:
    """See the module docstring. `hits` / `misses` count model-level lookups."""

    def __init__(self, max_bytes=DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._outputs = collections.OrderedDict()  # key -> outputs (a dict or an array)
        self._bytes = 0
        self._cuts = weakref.WeakKeyDictionary()
        self.hits = self.misses = 0

    def _cut(self, model):
        # What is frozen may change between calls (a recipe unfreezes the branches).
        state = tuple(id(v) for v in model.trainable_weights)
        if model not in self._cuts or self._cuts[model][0] != state:
            self._cuts[model] = (state, _Cut(model))
        return self._cuts[model][1]

    def predict(self, model, features, batch_size=256):
        """`model.predict(features)` (features: a dict keyed by the model's input names,
        extra keys ignored), answered from the memo where it can be."""
        arrays = {n: features[n] for n in _input_names(model)}
        cut = self._cut(model)
        # Keyed by the inputs the model reads: an image model that takes the text too (as
        # mmkeras models do) answers the same for another caption.
        key = (model_signature(model), tuple((n, array_signature(arrays[n])) for n in cut.reads))
        if key in self._outputs:
            self.hits += 1
            self._outputs.move_to_end(key)
            return self._outputs[key]
        self.misses += 1
        if not cut.nodes:
            out = model.predict(arrays, batch_size=batch_size, verbose=0)
        else:
            values = {}
            for part, names in cut.nodes:
                computed = self.predict(part, arrays, batch_size)
                values.update((name, np.asarray(value)) for name, value in
                              zip(names, keras.tree.flatten(computed)) if name is not None)
            rest = []
            if cut.rest is not None:
                rest = cut.rest.predict({n: values[n] if n in values else arrays[n] for n in cut.rest.input},
                                        batch_size=batch_size, verbose=0)
                rest = rest if isinstance(rest, list) else [rest]
            out = cut.assemble(rest, values)
        self._store(key, out)
        return out

    def _store(self, key, out):
        size = sum(np.asarray(v).nbytes for v in keras.tree.flatten(out))
        if size > self.max_bytes:
            return
        self._outputs[key] = out
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, dropped = self._outputs.popitem(last=False)
            self._bytes -= sum(np.asarray(v).nbytes for v in keras.tree.flatten(dropped))
