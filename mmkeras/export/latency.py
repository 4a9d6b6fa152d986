"""Size and latency of an exported model, measured in a fresh process with TensorFlow alone.

    python mmkeras/export/latency.py DIR [--batch-sizes 1 256] [--repeats 50] [--json]
    python -m mmkeras.export.latency DIR ...    # same numbers; also imports the mmkeras package

Run as a script it imports only TensorFlow and NumPy (never mmkeras or Keras), as a
serving host would. It calls `serving_default` on uint8 images at the model's input size
and captions drawn from the export's vocabulary; the first call of each batch size
(warm-up) is reported apart, then the median and 90th percentile of `repeats` calls.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf


def directory_bytes(path, exclude=()):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            if os.path.relpath(os.path.join(root, name), path) not in exclude:
                total += os.path.getsize(os.path.join(root, name))
    return total


def _read(path, default=""):
    if not os.path.isfile(path):
        return default
    with open(path, encoding="utf-8") as f:
        return f.read()


def _inputs(export_dir, batch_size, seed=0):
    meta = json.loads(_read(os.path.join(export_dir, "mmkeras.json"), "{}"))
    height, width = meta.get("image", {}).get("input_size") or (32, 32)
    words = _read(os.path.join(export_dir, "vocabulary.txt")).split("\n")[2:-1]
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(batch_size, height, width, 3), dtype=np.uint8)
    texts = [" ".join(rng.choice(words or ["word"], size=rng.integers(3, 12))) for _ in range(batch_size)]
    return tf.constant(images), tf.constant(texts)


def measure(export_dir, batch_sizes=(1, 256), repeats=50):
    """A dict of sizes (bytes) and timings (milliseconds) for `export_dir`."""
    start = time.perf_counter()
    loaded = tf.saved_model.load(export_dir)
    serve = loaded.signatures["serving_default"]
    report = {
        "export_dir": export_dir,
        "load_seconds": round(time.perf_counter() - start, 3),
        "saved_model_bytes": directory_bytes(export_dir, exclude={"model.keras", "mmkeras.json",
                                                                  "vocabulary.txt"}),
        "directory_bytes": directory_bytes(export_dir),
        "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count(),
        "batches": {},
    }
    for batch_size in batch_sizes:
        image, text = _inputs(export_dir, batch_size)
        start = time.perf_counter()
        serve(image=image, text=text)["probabilities"].numpy()
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            serve(image=image, text=text)["probabilities"].numpy()
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        report["batches"][str(batch_size)] = {
            "first_call_ms": round(first * 1e3, 2),
            "median_ms": round(median * 1e3, 2),
            "p90_ms": round(float(np.percentile(times, 90)) * 1e3, 2),
            "samples_per_second": round(batch_size / median, 1),
            "repeats": repeats,
        }
    report["mmkeras_imported"] = "mmkeras" in sys.modules  # False when run as a script
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export_dir")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.export_dir, "saved_model.pb")):
        print(f"error: '{args.export_dir}' holds no saved_model.pb", file=sys.stderr)
        return 2
    report = measure(args.export_dir, args.batch_sizes, args.repeats)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['export_dir']}: SavedModel {report['saved_model_bytes'] / 1e6:.2f} MB "
          f"(directory {report['directory_bytes'] / 1e6:.2f} MB), loaded in {report['load_seconds']:.2f} s, "
          f"TensorFlow {report['tensorflow']}, {report['cpu_count']} CPUs")
    for batch_size, row in report["batches"].items():
        print(f"  batch {batch_size:>4}: median {row['median_ms']:8.2f} ms, p90 {row['p90_ms']:8.2f} ms, "
              f"{row['samples_per_second']:9.1f} samples/s (first call {row['first_call_ms']:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
