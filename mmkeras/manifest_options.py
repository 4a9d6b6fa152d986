"""The command-line options that describe a manifest (--image-column, --text-column, ...),
shared by the benchmark and the demo, and the check that they reach only a dataset that
reads them.

    python -m mmkeras.bench --data my.csv --image-column img --text-column title \\
        --text-column description --label-column category --split-column split \\
        --on-bad-row skip --image-size 64

Each option is a keyword argument of `mmkeras.data.load_manifest`; an option left out
keeps load_manifest's default. (The predict CLI reads its batch files with its own
--image-column / --text-column / --label-column / --on-bad-row, see mmkeras.predict.)
"""

from mmkeras.data.manifest import BAD_ROW_POLICIES
from mmkeras.data.registry import resolve_dataset

# The options, named as load_manifest's keywords (and the CLI dests), in --help order.
MANIFEST_OPTIONS = ("image_column", "text_columns", "label_column", "split_column", "on_bad_row", "image_size")
# The registered datasets that take these options, and which of them.
ACCEPTED = {"manifest": set(MANIFEST_OPTIONS), "tfrecords": {"image_size"}}


def add_manifest_arguments(parser):
    """Add the manifest options to an argparse parser (each defaults to None: not given)."""
    group = parser.add_argument_group("manifest data (--data FILE.csv|.tsv|.jsonl|.parquet)")
    group.add_argument("--image-column", help="column of image paths or bytes (default: image)")
    group.add_argument("--text-column", action="append", dest="text_columns", metavar="TEXT_COLUMN",
                       help="a text column; repeat to join several (default: text)")
    group.add_argument("--label-column", help="column of labels (default: label)")
    group.add_argument("--split-column", help="column naming each row's split (default: none, a seeded "
                                              "stratified split is made)")
    group.add_argument("--on-bad-row", choices=BAD_ROW_POLICIES,
                       help="what a broken row does: error (default), skip it, or missing (keep it "
                            "with the image missing)")
    group.add_argument("--image-size", type=int, metavar="N",
                       help="fit every image to NxN, aspect kept by padding (default: chosen from the data)")
    return parser


def manifest_options(values):
    """{load_manifest keyword: value} of the options given (not None) in `values`, a dict or
    an object with them as attributes (an argparse Namespace, a BenchConfig)."""
    get = values.get if isinstance(values, dict) else (lambda key: getattr(values, key, None))
    options = {key: get(key) for key in MANIFEST_OPTIONS if get(key) is not None}
    if "text_columns" in options:
        options["text_columns"] = tuple(options["text_columns"])
    return options


def check_manifest_options(spec, options):
    """ValueError when `options` (manifest_options) name one that the dataset `spec` does
    not read: a manifest option given with, e.g., --data cifar10 is refused, not ignored."""
    if not options:
        return
    dataset = resolve_dataset(spec)
    refused = sorted(set(options) - ACCEPTED.get(dataset, set()))
    if refused:
        flags = ", ".join(_flag(key) for key in refused)
        accepted = "; ".join(f"{name}: {', '.join(sorted(keys))}" for name, keys in ACCEPTED.items())
        raise ValueError(f"Manifest option(s) {flags} given, but --data {spec!r} is the {dataset!r} dataset, "
                         f"which does not read them. Received {', '.join(f'{k}={options[k]!r}' for k in refused)}; "
                         f"the datasets that take such options: {accepted}.")


def parsed_manifest_options(parser, args):
    """manifest_options(args) of a parsed command line, checked against its --data: an
    option for data that does not read it is a usage error (parser.error exits)."""
    options = manifest_options(args)
    try:
        check_manifest_options(args.data, options)
    except ValueError as e:
        parser.error(str(e))
    return options


def _flag(key):
    """The CLI flag of an option: text_columns is given as --text-column (repeated)."""
    return "--" + ("text_column" if key == "text_columns" else key).replace("_", "-")
