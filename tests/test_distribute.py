"""Scaling out with tf.distribute: strategies by name, MirroredStrategy over logical CPU
devices, a two-process MultiWorkerMirroredStrategy on loopback, and resuming a killed fit.

Logical devices and TF_CONFIG must be set before TensorFlow initialises its devices, which
the rest of the suite has already done in this process: those cases run in subprocesses.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import mmkeras
from mmkeras import distribute, training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Shared by every subprocess: a tiny synthetic set and its pipelines.
PRELUDE = textwrap.dedent("""
    import dataclasses, json, os, sys
    import numpy as np
    import keras
    import mmkeras
    from mmkeras import distribute, training
    from mmkeras.data import make_datasets, make_synthetic
    from mmkeras.data.pipeline import make_dataset

    def tiny(n_train=192, batch_size=32, shuffle=True, validation_fraction=0.0):
        data = make_synthetic(n_train=n_train, n_test=32, image_size=16, seed=0)
        ds = make_datasets(data, batch_size=batch_size, vocab_size=30, sequence_length=8,
                           validation_fraction=validation_fraction, seed=0)
        if not shuffle:
            ds = dataclasses.replace(ds, train=make_dataset(*ds.arrays["train"], batch_size=batch_size))
        return ds
""")


def run_script(body, tmp_path, env=None, timeout=120, name="script.py"):
    path = tmp_path / name
    path.write_text(PRELUDE + textwrap.dedent(body))
    base = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env = {**base, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO, **(env or {})}
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=str(tmp_path))


def last_json(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_workers(args, cwd, timeout, n=2):
    """Run `python *args` as `n` workers of one TF_CONFIG cluster on localhost (cwd `cwd`);
    returns the JSON each printed last, in worker order."""
    workers = [f"127.0.0.1:{p}" for p in free_ports(n)]
    procs = []
    for index in range(n):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO, "TF_CONFIG": tf_config}
        procs.append(subprocess.Popen([sys.executable, *args], cwd=str(cwd), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            assert p.returncode == 0, stderr[-3000:]
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outputs


def test_unknown_strategy_lists_the_allowed_names():
    with pytest.raises(ValueError, match="default, mirrored, multi_worker"):
        distribute.get_strategy("horovod")


def test_default_strategy_is_tensorflows_own():
    assert distribute.get_strategy("default") is tf.distribute.get_strategy()


@pytest.mark.parametrize("value, match", [(None, "needs the TF_CONFIG"), ("{not json", "not valid JSON"),
                                          ('{"task": {"type": "worker", "index": 0}}', "lacks a 'cluster'"),
                                          ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "lacks a 'task'"),
                                          ('{"cluster": {"worker": ["127.0.0.1:1"]}, '
                                           '"task": {"type": "worker", "index": 3}}', "not in its cluster")])
def test_multi_worker_without_a_valid_tf_config_says_what_is_wrong(monkeypatch, value, match):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match=match):
        distribute.get_strategy("multi_worker")


def test_splitting_the_cpu_after_tensorflow_started_is_a_clear_error():
    tf.constant(1.0)  # devices are initialised in this process
    with pytest.raises(distribute.DeviceConfigurationError, match="at the start of the program"):
        distribute.split_cpu(len(tf.config.list_logical_devices("CPU")) + 3)


def test_multi_worker_after_tensorflow_started_is_a_clear_error(tmp_path):
    tf_config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]},
                            "task": {"type": "worker", "index": 0}})
    proc = run_script("""
        import tensorflow as tf
        tf.constant(1.0)
        try:
            distribute.get_strategy("multi_worker")
        except distribute.DeviceConfigurationError as error:
            print(json.dumps({"error": str(error)}))
    """, tmp_path, env={"TF_CONFIG": tf_config}, timeout=60)
    assert "must be created at the start of the program" in last_json(proc)["error"]


def test_fit_refuses_a_model_built_outside_the_strategy_scope(tiny_datasets):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    model = mmkeras.create_model("seed_concat", **tiny_datasets.model_kwargs())
    with pytest.raises(ValueError, match="not created in the scope of OneDeviceStrategy"):
        training.fit(model, tiny_datasets, epochs=1, verbose=0, strategy=strategy)
    built = training.build_in_scope(strategy, "seed_concat", **tiny_datasets.model_kwargs())
    history, stats = training.fit(built, tiny_datasets, epochs=1, verbose=0, strategy=strategy)
    assert stats["epochs"] == 1 and np.isfinite(history.history["loss"][0])


def test_mirrored_over_two_cpu_devices_matches_the_default_strategy(tmp_path):
    proc = run_script("""
        strategy = distribute.get_strategy("mirrored", num_cpu_devices=2)
        results = {"replicas": strategy.num_replicas_in_sync}
        for name, s in (("default", distribute.get_strategy("default")), ("mirrored", strategy)):
            ds = tiny(shuffle=False)  # the same batches in the same order for both
            keras.utils.set_random_seed(0)
            model = training.build_in_scope(s, "seed_concat", **ds.model_kwargs())
            results[name + "_init"] = float(sum(np.abs(w).sum() for w in model.get_weights()))
            history, _ = training.fit(model, ds, epochs=3, verbose=0, strategy=s)
            results[name] = history.history["loss"]
            np.savez(f"{name}.npz", *model.get_weights())
        print(json.dumps(results))
    """, tmp_path)
    out = last_json(proc)
    assert out["replicas"] == 2
    assert out["default_init"] == out["mirrored_init"]
    assert out["default"][-1] < out["default"][0]
    np.testing.assert_allclose(out["mirrored"], out["default"], rtol=1e-5)
    a, b = np.load(tmp_path / "default.npz"), np.load(tmp_path / "mirrored.npz")
    for key in a.files:
        np.testing.assert_allclose(b[key], a[key], atol=1e-5)


def test_two_worker_multi_worker_mirrored_fit_agrees_on_the_weights(tmp_path):
    body = """
        strategy = distribute.get_strategy("multi_worker")
        ds = tiny(n_train=240, shuffle=False, validation_fraction=0.2)  # 192 train, 48 validation
        keras.utils.set_random_seed(0)
        model = training.build_in_scope(strategy, "seed_concat", **ds.model_kwargs())
        history, stats = training.fit(model, ds, epochs=2, verbose=0, strategy=strategy)
        np.savez(f"worker_{distribute.task_id(strategy)}.npz", *model.get_weights())
        print(json.dumps({"replicas": strategy.num_replicas_in_sync, "history": history.history}))
    """
    (tmp_path / "worker.py").write_text(PRELUDE + textwrap.dedent(body))
    outputs = run_workers(["worker.py"], tmp_path, timeout=150)
    assert [o["replicas"] for o in outputs] == [2, 2]
    assert outputs[0]["history"] == outputs[1]["history"]
    w0, w1 = np.load(tmp_path / "worker_0.npz"), np.load(tmp_path / "worker_1.npz")
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])
    # Each worker took half of every global batch of 32: the same steps as one device.
    ns = {}
    exec(PRELUDE, ns)
    ds = ns["tiny"](n_train=240, shuffle=False, validation_fraction=0.2)
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("seed_concat", **ds.model_kwargs())
    history, _ = training.fit(model, ds, epochs=2, verbose=0)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(outputs[0]["history"][key], history.history[key], rtol=1e-4)
    for key, w in zip(w0.files, model.get_weights()):
        np.testing.assert_allclose(w0[key], w, atol=1e-4)


KILLABLE = """
    ds = tiny(n_train=192, batch_size=32)  # 6 batches per epoch
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("seed_concat", **ds.model_kwargs())
    kill_at = int(os.environ.get("KILL_AT_EPOCH", "-1"))

    class Log(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            with open("epochs.log", "a") as f:
                f.write(f"{epoch}\\n")

        def on_epoch_end(self, epoch, logs=None):
            with open("losses.log", "a") as f:
                f.write(f"{logs['loss']}\\n")

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == kill_at and batch == 3:  # mid-epoch, after the backup at batch 2
                os._exit(17)  # no clean-up, no on_train_end: as if the worker were killed

    history, _ = training.fit(model, ds, epochs=4, verbose=0, callbacks=[Log()],
                              backup_dir="backup", backup_freq=3)
    print(json.dumps({"epochs": history.epoch, "loss": history.history["loss"]}))
"""


def test_a_killed_fit_resumes_without_repeating_completed_epochs(tmp_path):
    killed = run_script(KILLABLE, tmp_path, env={"KILL_AT_EPOCH": "2"})
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert (tmp_path / "backup" / "latest.weights.h5").is_file()
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    resumed = last_json(run_script(KILLABLE, tmp_path))
    assert resumed["epochs"] == [2, 3]  # epochs 0 and 1 were complete: not run again
    log = [int(x) for x in (tmp_path / "epochs.log").read_text().split()]
    assert log == [0, 1, 2, 2, 3]  # only the interrupted epoch restarts
    assert not (tmp_path / "backup").exists()  # removed once fit completes
    first_losses = [float(x) for x in (tmp_path / "losses.log").read_text().split()]
    # The restored weights carry on: the resumed epoch starts well below the first one.
    assert resumed["loss"][0] < first_losses[0] - 0.05, (first_losses, resumed["loss"])
