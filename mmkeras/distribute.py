"""Scaling out on TensorFlow's own distribution engine (`tf.distribute`).

`get_strategy(name)` returns a `tf.distribute.Strategy`:

- ``"default"``: `tf.distribute.get_strategy()`, one device, nothing changes;
- ``"mirrored"``: `tf.distribute.MirroredStrategy` over every visible GPU, or, on a machine
  without GPUs, over the logical CPU devices (`num_cpu_devices` splits the CPU into that
  many first);
- ``"multi_worker"``: `tf.distribute.MultiWorkerMirroredStrategy`, one process per worker,
  the cluster described by the `TF_CONFIG` environment variable.

Models, optimizers and metrics must be created inside `strategy.scope()`; the Keras
`fit` then splits every global batch across the replicas and all-reduces the gradients.
The batch size of an mmkeras pipeline is the **global** batch: each replica sees
`batch_size / strategy.num_replicas_in_sync` examples per step.

Both the CPU split and `MultiWorkerMirroredStrategy` must come before TensorFlow
initialises its devices (the first op, dataset or model in the process): call
`get_strategy` at the start of the program.
"""

import contextlib
import json
import os

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


class DeviceConfigurationError(RuntimeError):
    """The devices were initialised before the strategy could configure them."""


def split_cpu(num_devices):
    """Split the first physical CPU into `num_devices` logical devices (before TF starts)."""
    if not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"`num_cpu_devices` must be an integer >= 1. Received num_cpu_devices={num_devices!r}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == num_devices:
        return  # already split this way
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
    except RuntimeError as error:
        have = len(tf.config.list_logical_devices("CPU"))
        raise DeviceConfigurationError(
            f"Cannot split the CPU into {num_devices} logical devices: TensorFlow has already "
            f"initialised its devices ({have} logical CPU device(s)). Call "
            "mmkeras.distribute.get_strategy(..., num_cpu_devices=N) at the start of the program, "
            f"before any dataset, model or tensor is created. ({error})") from error


def read_tf_config():
    """The parsed, validated `TF_CONFIG` (cluster + task) of a multi-worker run."""
    raw = os.environ.get("TF_CONFIG")
    example = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not raw:
        raise ValueError("Strategy 'multi_worker' needs the TF_CONFIG environment variable, e.g. "
                         f"TF_CONFIG='{example}' (same cluster on every worker, its own index on each).")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}). Received TF_CONFIG={raw!r}; "
                         f"expected e.g. {example}") from error
    if not isinstance(config, dict):
        config = {}
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG lacks a 'cluster' mapping. Received TF_CONFIG={raw!r}; expected e.g. {example}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG lacks a 'task' with 'type' and 'index'. Received TF_CONFIG={raw!r}; "
                         f"expected e.g. {example}")
    hosts = cluster.get(task["type"])
    if not isinstance(hosts, list) or not 0 <= int(task["index"]) < len(hosts):
        raise ValueError(f"TF_CONFIG task {task} is not in its cluster {cluster}. Received TF_CONFIG={raw!r}.")
    return config


def get_strategy(name="default", num_cpu_devices=None):
    """A `tf.distribute.Strategy` by name: "default", "mirrored" or "multi_worker".

    num_cpu_devices: for "mirrored" on a machine without GPUs, split the CPU into this many
    logical devices first (must happen before TensorFlow initialises its devices).
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}. Received name={name!r}; expected one of: "
                         f"{', '.join(STRATEGIES)}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        read_tf_config()
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise DeviceConfigurationError(
                "MultiWorkerMirroredStrategy must be created at the start of the program, before "
                f"any dataset, model or tensor ({error}).") from error
    # mirrored
    if tf.config.list_physical_devices("GPU"):
        if num_cpu_devices is not None:
            raise ValueError("`num_cpu_devices` splits the CPU of a machine without GPUs; this machine "
                             f"has GPUs. Received num_cpu_devices={num_cpu_devices}.")
        return tf.distribute.MirroredStrategy()
    if num_cpu_devices is not None:
        split_cpu(num_cpu_devices)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    # NCCL is GPU-only: reduce on one device.
    return tf.distribute.MirroredStrategy(devices=devices,
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) \
        and strategy.cluster_resolver is not None \
        and len(strategy.cluster_resolver.cluster_spec().as_dict().get("worker", [])) > 1


def task_id(strategy):
    """This worker's index in a multi-worker cluster (0 otherwise)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None else 0


def worker_count(strategy):
    """The number of workers in a multi-worker cluster (1 otherwise)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    return max(1, len(resolver.cluster_spec().as_dict().get("worker", [])))


def shard_by_data(dataset):
    """Set the auto-shard policy to DATA: right for pipelines over in-memory arrays.

    Every worker builds the whole (identically seeded) pipeline and keeps its share of
    each global batch; FILE sharding would find no files to split. A pipeline that chose
    its policy already keeps it (a worker's own TFRecord shards carry OFF: they are this
    worker's share).
    """
    if dataset.options().experimental_distribute.auto_shard_policy != tf.data.experimental.AutoShardPolicy.AUTO:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def created_in_scope(model, strategy):
    """Whether `model`'s variables belong to `strategy` (were created in its scope)."""
    if not model.weights:
        return True
    return strategy.extended.variable_created_in_scope(model.weights[0].value)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that also records the right epoch after a resume.

    Keras records the epoch of a mid-epoch (`save_freq=N` batches) backup from a counter
    that starts at 0 in each `fit`; after one resume a second kill would then restart from
    epoch 0. Here the counter follows the epoch being trained. A resumed `fit` restarts
    the interrupted epoch from its first batch, with the weights of the last backup.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch


@contextlib.contextmanager
def keras_multi_worker_fixes(model, dataset, strategy):
    """Work around two Keras 3 bugs (3.15 included) while `Model.fit` runs under
    MultiWorkerMirroredStrategy (keras-team/keras#20329, #20585); the distribution itself
    stays TensorFlow's: gradients are all-reduced by `tf.distribute` as usual.

    1. Keras builds metrics and losses from the first data batch after all-reducing it
       across workers, which fails for any nested batch ("Attempt to convert a value
       ({'image': PerReplica ...}) ... to a Tensor"). Shapes and dtypes are all the build
       needs: here they come from `dataset.element_spec`, and that all-reduce is skipped.
    2. Keras averages each step's logs across workers with `strategy.reduce("MEAN", v,
       axis=0)`, which fails for the scalar loss and metrics ("Invalid reduction dimension
       0 for input with 0 dimensions"). Here scalars are averaged with `axis=None`.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    keras_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean"):
            return keras_reduce(values, strategy, reduction)

        def mean(v):
            if not isinstance(v, (tf.distribute.DistributedValues, tf.Tensor)):
                return v
            return strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0)

        return tf.nest.map_structure(mean, values)

    with strategy.scope():
        model._symbolic_build(data_batch=dataset.element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield model
    finally:
        tf_trainer.reduce_per_replica = keras_reduce
        del model._maybe_symbolic_build
