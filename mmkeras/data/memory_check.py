"""Peak memory of one epoch over a manifest: streamed from disk vs. held in memory.

    python -m mmkeras.data.memory_check --rows 2000 [--size 128] [--modes streamed,cached,memory,tfrecords]

Generates N JPEG images (size x size) and a CSV manifest in a temporary folder, then,
each in a fresh process (peak RSS only grows), loads the manifest, builds the pipelines
(make_datasets, batch 128) and runs one epoch over the train split:

- streamed: images decoded inside tf.data every epoch;
- cached: the same with cache_dir (decoded once into a file, read back by offset);
- memory: every split decoded into uint8 arrays first (the PairedData path);
- tfrecords: the manifest written as 8 TFRecord shards per split (outside the
  measurement), read back with read_tfrecords and streamed.

It prints, per mode, the peak RSS (resource.getrusage) after the imports, after loading
the data, after building the pipelines and after the epoch, in MiB; "growth" is the
epoch's peak less the imports'. Pass --json FILE to keep the figures.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

MODES = ("streamed", "cached", "memory", "tfrecords")
TFRECORD_SHARDS = 8


def peak_rss_mib():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_images(folder, rows, size, seed=0, classes=10):
    """`rows` JPEG files of smooth colour fields with noise, and manifest.csv naming them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    lines = ["image,text,label"]
    for i in range(rows):
        label = int(rng.integers(classes))
        colour = rng.uniform(40, 215, 3).astype(np.float32)
        field = colour * (0.6 + 0.4 * ramp[:, None, None]) * (0.6 + 0.4 * ramp[None, :, None])
        pixels = np.clip(field + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        name = f"images/{i:06d}.jpg"
        Image.fromarray(pixels).save(os.path.join(folder, name), quality=90)
        lines.append(f"{name},item {i} of class {label},class_{label}")
    path = os.path.join(folder, "manifest.csv")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def measure(manifest, mode, batch_size=128):
    """One mode, in this process: {stage: peak RSS MiB} and seconds."""
    import tensorflow as tf  # noqa: F401  (imports count towards the baseline)

    from mmkeras.data import PairedData, PairedSplit, make_datasets, read_tfrecords

    out = {"mode": mode, "after_imports": peak_rss_mib()}
    start = time.perf_counter()
    if mode == "tfrecords":
        data = read_tfrecords(_shards_dir(manifest), verbose=False)
    else:
        data = _load(manifest)
    out["after_load"] = peak_rss_mib()
    kwargs = dict(batch_size=batch_size, vocab_size=2000, sequence_length=16, seed=0)
    if mode == "memory":
        streamed = make_datasets(data, **kwargs)
        splits = {}
        for split, part in (("train", data.train), ("test", data.test)):
            splits[split] = PairedSplit(streamed.stream.decode(split, part.image), part.text, part.label)
        data = PairedData(splits["train"], splits["test"], data.class_names)
        ds = make_datasets(data, **kwargs)
    else:
        cache_dir = os.path.join(os.path.dirname(manifest), "cache") if mode == "cached" else None
        ds = make_datasets(data, cache_dir=cache_dir, **kwargs)
    out["after_pipelines"] = peak_rss_mib()
    out["setup_seconds"] = time.perf_counter() - start
    start, rows = time.perf_counter(), 0
    for _, labels in ds.train:
        rows += int(labels.shape[0])
    out["epoch_seconds"] = time.perf_counter() - start
    out["after_epoch"] = peak_rss_mib()
    out["epoch_rows"] = rows
    return out


def _load(manifest):
    from mmkeras.data import load_manifest

    # No validation rows in the manifest: make_datasets carves the same ones in every mode.
    return load_manifest(manifest, validation_fraction=0.0, verbose=False)


def _shards_dir(manifest):
    return os.path.join(os.path.dirname(manifest), "shards")


def write_shards(manifest):
    """The manifest as TFRecord shards beside it (for the tfrecords mode)."""
    from mmkeras.data import write_tfrecords

    write_tfrecords(_load(manifest), _shards_dir(manifest), shards=TFRECORD_SHARDS, verbose=False)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mmkeras.data.memory_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: MODE,MANIFEST in a child
    args = parser.parse_args(argv)
    if args.measure:
        mode, manifest = args.measure.split(",", 1)
        if mode == "shards":
            write_shards(manifest)
        else:
            print(json.dumps(measure(manifest, mode)))
        return 0
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; expected some of {', '.join(MODES)}")
    with tempfile.TemporaryDirectory(prefix="mmkeras-memory-") as folder:
        start = time.perf_counter()
        manifest = write_images(folder, args.rows, args.size)
        print(f"{args.rows} {args.size}x{args.size} JPEG rows written in {time.perf_counter() - start:.1f} s",
              file=sys.stderr)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        if "tfrecords" in modes:
            _child(["--measure", f"shards,{manifest}"], env)
        print(f"{'mode':<9} {'imports':>8} {'load':>6} {'pipelines':>10} {'epoch':>7} {'growth':>7} "
              f"{'setup s':>8} {'epoch s':>8}")
        results = []
        for mode in modes:
            r = json.loads(_child(["--measure", f"{mode},{manifest}"], env).strip().splitlines()[-1])
            results.append(r)
            print(f"{mode:<9} {r['after_imports']:>8.0f} {r['after_load']:>6.0f} {r['after_pipelines']:>10.0f} "
                  f"{r['after_epoch']:>7.0f} {r['after_epoch'] - r['after_imports']:>7.0f} "
                  f"{r['setup_seconds']:>8.1f} {r['epoch_seconds']:>8.1f}   "
                  f"(peak RSS, MiB; {r['epoch_rows']} train rows)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": args.rows, "size": args.size, "results": results}, f, indent=1)
    return 0


def _child(args, env):
    """Run this module in a fresh process; its stdout (stderr shown on failure)."""
    child = subprocess.run([sys.executable, "-m", "mmkeras.data.memory_check", *args], capture_output=True,
                           text=True, env=env)
    if child.returncode:
        raise RuntimeError(f"memory_check {' '.join(args)} failed:\n{child.stderr[-3000:]}")
    return child.stdout


if __name__ == "__main__":
    sys.exit(main())
