"""`make demo`: the seed model and its two unimodal counterparts on CIFAR-10 with captions.

Real images come from MMKERAS_DATA_DIR (default ../shared/data), the cache, or a download;
when none is reachable the synthetic set is used, and the demo says so. Finishes within
10 minutes on a 2-core CPU.

    python -m mmkeras.demo [--epochs 8] [--batch-size 128] [--data cifar10|synthetic|PATH]
        [--class-weight balanced] [--image-column C --text-column C ... (a manifest's columns)]

--data takes any spec of the dataset registry (mmkeras.data.list_datasets(): a name, or a
path such as a paired-format directory or a manifest .csv/.tsv/.jsonl/.parquet, whose
columns and policies the manifest options give: see mmkeras.manifest_options).
"""

import argparse
import sys
import time

import keras

import mmkeras
from mmkeras import training
from mmkeras.data import describe_datasets, load_dataset, make_datasets, resolve_dataset
from mmkeras.evaluation import worst_class_recall
from mmkeras.manifest_options import add_manifest_arguments, parsed_manifest_options

DEMO_MODELS = ("seed_image", "seed_text", "seed_concat")
FALLBACK = "synthetic"  # generated in code: reachable whatever is offline


def load_demo_data(spec, seed, options=None):
    """The dataset `spec` names (`options`: a manifest's, see mmkeras.manifest_options); the
    synthetic set when a named set's images are not reachable (a path the user gave that
    cannot be read is an error, not a fallback)."""
    try:
        return load_dataset(spec, seed=seed, **(options or {}))
    except FileNotFoundError as e:
        if spec == FALLBACK or resolve_dataset(spec) != spec:  # a path: the user's own data
            raise
        print(f"\n{e}\n\n==> No real {spec} images reachable: running on the SYNTHETIC set instead.\n")
        return load_dataset(FALLBACK, seed=seed)


def dataset_spec(spec):
    """argparse type of --data: a spec the dataset registry resolves."""
    try:
        resolve_dataset(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return spec


def format_table(rows):
    header = f"{'model':<14}{'test acc':>10}{'macro-F1':>10}{'worst class (recall)':>24}{'samples/s':>11}{'seconds':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        worst = worst_class_recall(r.get("per_class_recall") or {})
        worst = "-" if worst is None else f"{worst[0][:14]} {worst[1]:.3f}"
        lines.append(f"{r['name']:<14}{r['accuracy']:>10.4f}{r['macro_f1']:>10.4f}{worst:>24}"
                     f"{r['train_samples_per_second']:>11.0f}{r['train_seconds']:>9.1f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="cifar10", type=dataset_spec,
                        help=f"a registered dataset, {describe_datasets()} (default: cifar10)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class-weight", choices=("balanced",), default=None,
                        help="weigh each training example by n / (k * count of its class) (default: unweighted)")
    add_manifest_arguments(parser)
    args = parser.parse_args(argv)
    options = parsed_manifest_options(parser, args)

    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    data = load_demo_data(args.data, args.seed, options)
    datasets = make_datasets(data, batch_size=args.batch_size, seed=args.seed)
    print(f"data: {data.name}, {len(data.train)} train / {len(data.test)} test, "
          f"{data.num_classes} classes, images {data.image_shape}")
    print(f"example caption: {str(data.train.text[0])!r} -> {data.class_names[data.train.label[0]]}")
    rows = []
    for name in DEMO_MODELS:
        keras.utils.set_random_seed(args.seed)
        model = mmkeras.create_model(name, **datasets.model_kwargs())
        print(f"\n== {name} ({model.count_params():,} parameters)")
        # Fresh pipelines per model: each sees the same seeded data order, whatever ran before.
        _, stats = training.fit(model, datasets.with_batch_size(args.batch_size), epochs=args.epochs, verbose=2,
                                class_weight=args.class_weight)
        report, _ = training.evaluate(model, datasets)
        rows.append({"name": name, **report, **stats})
    print("\n" + format_table(rows))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
