"""python -m mmkeras.bench --data {cifar10,cifar100,synthetic,DIR,FILE.csv} --models PATTERN ...

A manifest (--data my.csv|.tsv|.jsonl|.parquet) takes its columns from --image-column,
--text-column (repeat to join several), --label-column, --split-column, and --on-bad-row,
--image-size; results.json's "data" records what was read, skipped and blanked."""

import argparse

from mmkeras.bench.config import DEFAULT_FUSED, DEFAULT_MODELS, DEFAULT_TIME_BUDGET, BenchConfig
from mmkeras.bench.runner import run
from mmkeras.data import describe_datasets
from mmkeras.distribute import STRATEGIES
from mmkeras.fusion_recipes import DEFAULT_FUSION_RECIPE, list_fusion_recipes
from mmkeras.manifest_options import add_manifest_arguments, parsed_manifest_options
from mmkeras.training import PRECISIONS


def _minutes(value):
    """--time-budget: a number of minutes > 0, or "none" (no limit)."""
    if value.strip().lower() == "none":
        return None
    try:
        minutes = float(value)
    except ValueError:
        minutes = None
    if minutes is None or not minutes > 0:
        raise argparse.ArgumentTypeError(f"expected a number of minutes > 0 or 'none'; received {value!r}")
    return minutes


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m mmkeras.bench", description=__doc__)
    p.add_argument("--data", default="cifar10", help=f"a registered dataset ({describe_datasets()})")
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help="comma-separated wildcards over registered models and ensembles, e.g. '*', "
                        f"'gmu_*', 'ensemble_*' (default: the default run, {DEFAULT_MODELS!r})")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of every row (default: from the data, see docs/benchmark.md, Schedules)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch of every package row (default: from the data, see docs/benchmark.md, "
                        "Schedules; the recipe rows keep the recipe's 32)")
    p.add_argument("--time-budget", type=_minutes, default=DEFAULT_TIME_BUDGET, metavar="MINUTES",
                   help="finish the whole run within MINUTES: rows are probed, then their epochs cut to fit "
                        f"(default {DEFAULT_TIME_BUDGET:g}; 'none': no limit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--quick", action="store_true", help="small subset and 1 epoch: a smoke run")
    p.add_argument("--modality-dropout", type=float, default=0.0)
    p.add_argument("--export", action="store_true", help="export the best model as a SavedModel")
    p.add_argument("--image-init", default=None, help=".keras model whose image branch warm-starts fused models")
    p.add_argument("--text-init", default=None, help=".keras model whose text branch warm-starts fused models")
    p.add_argument("--tensorboard", default=None, help="write TensorBoard logs for every model here")
    p.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="train fused rows from scratch instead of from this run's unimodal rows")
    p.add_argument("--fused-epochs", type=int, default=None,
                   help="epochs of a warm-started fused row (default: --epochs, else from the data)")
    p.add_argument("--fusion-recipe", default=DEFAULT_FUSION_RECIPE, choices=list_fusion_recipes(),
                   help="how a warm-started fused row trains (see docs/models.md, Fusion recipes; "
                        f"default: {DEFAULT_FUSION_RECIPE})")
    p.add_argument("--pretrain-image", default=None, metavar="{cifar10,cifar100,DIR}",
                   help="first train an image-only model on this image set (DIR: SPLIT/CLASS/*.jpg "
                        "folders or a tarball of them), then warm-start every fused row's image branch from it")
    p.add_argument("--pretrain-model", default=None,
                   help="the image-only model to pretrain (default: image_<branch> for each image "
                        "branch the selected fused rows use)")
    p.add_argument("--pretrain-epochs", type=int, default=None, help="epochs of pretraining (default: as image rows)")
    p.add_argument("--image-precision", default="auto", choices=PRECISIONS,
                   help="dtype policy of image-only rows and pretraining (auto: mixed_float16 on a "
                        "GPU, mixed_bfloat16 on a CPU with native bf16, else float32)")
    p.add_argument("--robustness-samples", type=int, default=2000,
                   help="seeded test subset on which the five robustness accuracies are measured")
    p.add_argument("--default-fused", default=DEFAULT_FUSED,
                   help="the from-scratch fused row whose time to the recipe's accuracy is the headline")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no random flips/shifts")
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--vocab-size", type=int, default=2000)
    p.add_argument("--sequence-length", type=int, default=None,
                   help="tokens per text (default: the training texts' 99th percentile rounded up to a "
                        "multiple of 8, within [8, 128])")
    p.add_argument("--strategy", default="default", choices=STRATEGIES,
                   help="tf.distribute strategy: mirrored over the visible GPUs (or logical CPU "
                        "devices), multi_worker from TF_CONFIG (see docs/scaling.md)")
    p.add_argument("--class-weight", choices=("balanced",), default=None,
                   help="weigh each training example by n / (k * count of its class) from the train "
                        "split, in every trained row (default: unweighted)")
    add_manifest_arguments(p)
    args = p.parse_args(argv)
    parsed_manifest_options(p, args)  # an option for data that does not read it: a usage error, now
    return BenchConfig(**{k: v for k, v in vars(args).items()})


def main(argv=None):
    config = parse_args(argv)
    run(config)
    with open(f"{config.out}/results.md", encoding="utf-8") as f:
        print(f.read())


if __name__ == "__main__":
    main()
