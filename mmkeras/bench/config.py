"""What a benchmark run is asked to do (`BenchConfig`) and the defaults it falls back to."""

import dataclasses

from mmkeras.fusion_recipes import DEFAULT_FUSION_RECIPE, list_fusion_recipes

# The default run (see README, "What the default run trains"): the seed recipe and the seed
# graph through the package pipeline, one from-scratch fused model, the strong image and
# text branches once each, every fusion family warm-started from them, every ensemble.
# The default run's image row (issue 17: the speed-run branch and recipe, mmkeras.speedrun);
# every fusion family borrows its branch.
DEFAULT_IMAGE_MODEL = "image_airbench"
DEFAULT_MODELS = (f"seed_concat,gmu_cnn_lstm,{DEFAULT_IMAGE_MODEL},text_bilstm,"
                  f"*_{DEFAULT_IMAGE_MODEL.removeprefix('image_')}_bilstm,ensemble_*")
# The fused model trained from scratch whose time to the recipe's accuracy is the headline.
DEFAULT_FUSED = "gmu_cnn_lstm"

# The preferred batch sizes of schedule.plan_schedule (which halves them on small sets and
# large images), and the shared pipelines' batch. The seed graph (one small convolution, one
# LSTM) is overhead-bound on 2 cores: steady CIFAR-10 epochs (45,000 pairs, flips and
# shifts, validation) took 9.7-10.4 s at batch 256 and 8.6-8.9 s at 512 (2026-11-23); an
# earlier train-only microbenchmark gave 4,711 samples/s at 128 and 5,648 at 256. The
# larger models gain nothing from bigger batches (image_resnet9: 500 samples/s at 128 and 256).
DEFAULT_BATCH_SIZE = 128
SEED_BATCH_SIZE = 512
# The whole run's default time budget in minutes (issue 16: the default run on CIFAR-10, or
# on 7,000 pairs of 64x64 images, within half an hour on a 2-core CPU). A run that fits
# is not touched (its rows are only probed, a few seconds each); one that does not has its
# epochs cut to fit (budget.py). `--time-budget none` (time_budget=None): no limit.
DEFAULT_TIME_BUDGET = 30.0
# --quick: a seeded subset (mmkeras.data.take_subset) and one epoch, for smoke runs.
QUICK = dict(n_train=1000, n_test=300, epochs=1)


@dataclasses.dataclass
class BenchConfig:
    data: str = "cifar10"  # a name or path mmkeras.data.load_dataset accepts
    models: str = DEFAULT_MODELS
    epochs: int = None  # None: each row's from the data (schedule.plan_schedule; recipe rows 10)
    batch_size: int = None  # None: each row's from the data (schedule.plan_schedule); recipe rows keep 32
    seed: int = 0
    out: str = "runs/bench"
    quick: bool = False
    modality_dropout: float = 0.0
    export: bool = False
    image_init: str = None
    text_init: str = None
    tensorboard: str = None
    vocab_size: int = 2000
    sequence_length: int = None  # None: fitted to the training texts (data.pipeline.fit_sequence_length)
    warm_start: bool = True  # fused rows start from this run's unimodal rows (frozen image branch)
    fused_epochs: int = None  # epochs of a warm-started fused row (None: --epochs, else from the data)
    fusion_recipe: str = DEFAULT_FUSION_RECIPE  # how a warm-started fused row trains (mmkeras.fusion_recipes)
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
    # Class imbalance: None, "balanced" or {class index or name: weight}, for every trained
    # row (see mmkeras.training.resolve_class_weight); ensembles combine the weighted rows.
    class_weight: object = None
    # A manifest's columns and policies (mmkeras.manifest_options; None: load_manifest's
    # default). Refused with an error for data that does not read them.
    image_column: str = None
    text_columns: tuple = None
    label_column: str = None
    split_column: str = None
    on_bad_row: str = None
    image_size: int = None
    # Minutes the whole run may take (None: no limit): rows are probed, then their epochs
    # cut to fit (budget.share_budget); results.json records planned and spent seconds.
    time_budget: float = DEFAULT_TIME_BUDGET

    def __post_init__(self):
        if self.fusion_recipe not in list_fusion_recipes():
            raise ValueError(f"Unknown fusion_recipe {self.fusion_recipe!r}; expected one of: "
                             f"{', '.join(list_fusion_recipes())}.")

    def data_options(self):
        """The load_dataset options these settings give (the manifest options set)."""
        from mmkeras.manifest_options import manifest_options

        return manifest_options(self)
