"""Predict with an exported model (`mmkeras.export.export_model`): TensorFlow alone.

    python -m mmkeras.predict MODEL_DIR --image a.png --text "a small red car" [--top-k 3] [--json]
        [--explain]
    python -m mmkeras.predict MODEL_DIR --csv pairs.csv [--top-k 3] [--json] [--batch-size 64]
        [--image-column image] [--text-column text ...] [--label-column label]
        [--on-bad-row error|skip|missing]

The batch file is a manifest as training reads it (mmkeras.data.load_manifest): a .csv,
.tsv, .jsonl or .parquet table with a column of images (paths, relative to the file's
folder, or the encoded bytes) and text columns (joined with a space; an empty cell is the
empty text); by default the columns `image` and `text`. With --label-column each record
also shows its true label. The model is loaded with `tf.saved_model.load`; no Keras
model or mmkeras layer is needed. Images are decoded with Pillow, EXIF rotation applied,
and converted to RGB: grayscale is replicated to three channels, 16-bit images are scaled
to 8 bits (the high byte, as training's decoder does), the alpha channel of RGBA (and LA,
or palette images with transparency) is dropped.

A broken row (no image, an image file that is missing or unreadable, a CSV row without
its text column) stops the command with a one-line message on stderr and exit code 2,
naming the file, the line (header = line 1; Parquet: row index from 0), the column and
how many more rows have problems; with --on-bad-row skip those rows are left out (and
listed on stderr), with --on-bad-row missing a row whose image is broken is predicted
with a black image (the image-missing case). A missing model also exits with code 2.

With --explain each prediction also shows what the image and the text contributed to the
predicted class (exact Shapley values) and a score per token (integrated gradients), from
the export's `explain` signature (docs/explain.md); in Python, `Predictor.explain`.

In Python, `Predictor(MODEL_DIR).predict(images, texts)` takes a list of arrays (any
sizes; uint8 or float pixels in [0, 255]; 2-D grayscale, 1, 2, 3 or 4 channels) or a 4-D
batch, and a list of str / bytes. Float images go to the `serving_float` signature,
where NaN pixels read as 0 and values are clipped to [0, 255].
"""

import argparse
import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from mmkeras.data.manifest import BAD_ROW_POLICIES, image_source
from mmkeras.data.tables import is_blank, join_text, read_table

EXIT_BAD_INPUT = 2


class InputError(ValueError):
    """Input that cannot be served, with a message meant for the person who gave it."""


def load_image(source):
    """An image file (a path, or its bytes) as a uint8 (H, W, 3) RGB array: grayscale
    replicated, 16-bit scaled to 8 bits, alpha dropped, EXIF rotation applied."""
    if isinstance(source, (bytes, bytearray)):
        name, opened = "the image bytes", io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"image file not found: '{path}'")
        name, opened = f"'{path}'", path
    try:
        with Image.open(opened) as image:
            return _rgb_pixels(ImageOps.exif_transpose(image))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"cannot read {name} as an image ({type(err).__name__}: {err})") from err


def _rgb_pixels(image):
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit grayscale: keep the high byte, as tf.io.decode_image does in training;
        # convert("RGB") would clip every value above 255 to white.
        gray = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def as_rgb(image):
    """An image array as (H, W, 3): uint8 as is, other integers checked to lie in [0, 255]
    and cast, floats as float32 (NaN and range are handled in the graph)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise InputError("an image must be (height, width) or (height, width, channels) with 1-4 "
                         f"channels. Received shape {image.shape}.")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"an image must be at least 1x1 pixels. Received shape {image.shape}.")
    channels = image.shape[-1]
    if channels in (1, 2):  # gray (+ alpha)
        image = np.repeat(image[..., :1], 3, axis=-1)
    elif channels == 4:  # RGBA: alpha dropped
        image = image[..., :3]
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.integer) or image.dtype == np.bool_:
        if image.dtype != np.bool_ and (image.min() < 0 or image.max() > 255):
            raise InputError("integer pixels must lie in [0, 255]. Received values in "
                             f"[{image.min()}, {image.max()}] ({image.dtype}).")
        return image.astype(np.uint8) * (255 if image.dtype == np.bool_ else 1)
    raise InputError(f"image pixels must be numbers. Received dtype {image.dtype}.")


def _as_bytes(text):
    if isinstance(text, bytes):
        return text
    if not isinstance(text, str):
        raise InputError(f"a text must be str or bytes. Received {type(text).__name__}: {text!r}.")
    try:  # surrogateescape restores undecodable bytes of command-line arguments
        return text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace")


class Predictor:
    """The serving signatures of an export directory, fed from Python."""

    def __init__(self, export_dir):
        self.export_dir = Path(export_dir)
        if not (self.export_dir / "saved_model.pb").is_file():
            raise InputError(f"'{export_dir}' is not an exported model directory (no saved_model.pb).")
        loaded = tf.saved_model.load(str(self.export_dir))
        self._loaded = loaded  # keeps the signatures' resources alive
        self._serve = loaded.signatures["serving_default"]
        self._serve_float = loaded.signatures.get("serving_float")
        meta_path = self.export_dir / "mmkeras.json"
        self.metadata = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        num_classes = int(self._serve.structured_outputs["probabilities"].shape[-1])
        self.class_names = self.metadata.get("class_names") or [f"class_{i}" for i in range(num_classes)]

    def predict(self, images, texts, batch_size=64):
        """{"probabilities": (N, C) float32, "class_id": (N,) int64, "class_name": [N str]}.

        images: a list of arrays of any sizes, or a 4-D batch; texts: a list of str/bytes.
        Images of one size and dtype are served together, `batch_size` at a time.
        """
        pixels, encoded = self._inputs(images, texts)
        num_classes = len(self.class_names)
        probabilities = np.zeros((len(encoded), num_classes), np.float32)
        class_id = np.zeros(len(encoded), np.int64)
        for chunk, out in self._served(pixels, encoded, batch_size, self._signature_for):
            probabilities[chunk] = out["probabilities"].numpy()
            class_id[chunk] = out["class_id"].numpy()
        return {"probabilities": probabilities, "class_id": class_id,
                "class_name": [self.class_names[i] for i in class_id]}

    def explain(self, images, texts, batch_size=64):
        """`predict`'s outputs plus, from the export's `explain` signature, per input:
        "image_contribution", "text_contribution", "p_neither" (N,) float32 (for the
        predicted class: contribution of each modality, and its probability with both
        blanked), "token_scores" (N, T) float32 and "tokens" (N lists of (token, score),
        padding left out). Float images are rounded to uint8 first (NaN read as 0).
        """
        explain = self._loaded.signatures.get("explain")
        if explain is None:
            raise InputError(f"'{self.export_dir}' has no `explain` signature: export it again with this "
                             "version of mmkeras.")
        pixels, encoded = self._inputs(images, texts)
        pixels = [p if p.dtype == np.uint8 else np.clip(np.nan_to_num(p), 0, 255).round().astype(np.uint8)
                  for p in pixels]
        n = len(encoded)
        result = {"probabilities": np.zeros((n, len(self.class_names)), np.float32),
                  "class_id": np.zeros(n, np.int64), "tokens": [None] * n}
        scalars = ("image_contribution", "text_contribution", "p_neither")
        result.update({key: np.zeros(n, np.float32) for key in scalars})
        scores = {}
        for chunk, out in self._served(pixels, encoded, batch_size, lambda dtype: explain):
            for key in ("probabilities", "class_id", *scalars):
                result[key][chunk] = out[key].numpy()
            for i, tokens, row in zip(chunk, out["tokens"].numpy(), out["token_scores"].numpy()):
                scores[i] = row
                result["tokens"][i] = [(t.decode("utf-8", errors="replace"), float(v))
                                       for t, v in zip(tokens, row) if t]
        result["class_name"] = [self.class_names[i] for i in result["class_id"]]
        result["token_scores"] = np.stack([scores[i] for i in range(n)]) if n else np.zeros((0, 0), np.float32)
        return result

    def _inputs(self, images, texts):
        if isinstance(texts, (str, bytes)):
            raise InputError("`texts` must be a list of texts; wrap a single text in a list.")
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        if not isinstance(images, (list, tuple)):
            raise InputError("`images` must be a list of arrays or a 4-D array. "
                             f"Received {type(images).__name__}.")
        texts = list(texts)
        if len(images) != len(texts):
            raise InputError(f"got {len(images)} image(s) and {len(texts)} text(s): each image needs "
                             "one text (use '' for a model that ignores text).")
        return [as_rgb(image) for image in images], [_as_bytes(text) for text in texts]

    def _signature_for(self, dtype):
        serve = self._serve if dtype == np.dtype(np.uint8).str else self._serve_float
        if serve is None:
            raise InputError("this export has no `serving_float` signature: give uint8 images.")
        return serve

    @staticmethod
    def _served(pixels, encoded, batch_size, signature_for):
        """(row indices, outputs) per served chunk: images of one size and dtype together."""
        groups = {}
        for i, image in enumerate(pixels):
            groups.setdefault((image.shape, image.dtype.str), []).append(i)
        for (_, dtype), rows in groups.items():
            serve = signature_for(dtype)
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                yield chunk, serve(image=tf.constant(np.stack([pixels[i] for i in chunk])),
                                   text=tf.constant([encoded[i] for i in chunk], dtype=tf.string))

    def top_k(self, probabilities, k=3):
        """Per row, the k most probable classes as dicts (class_name, class_id, probability)."""
        if not isinstance(k, int) or k < 1:
            raise InputError(f"`k` must be a positive int. Received k={k!r}.")
        out = []
        for row in np.asarray(probabilities):
            order = np.argsort(-row, kind="stable")[:k]
            out.append([{"class_name": self.class_names[i], "class_id": int(i),
                         "probability": float(row[i])} for i in order])
        return out


@dataclasses.dataclass
class PairRow:
    """One row of a batch file: where it is, its image (path or bytes), text and label."""

    where: str  # "line 7" or "row index 7 (Parquet rows counted from 0)"
    line: int
    image: object  # a path (str), the bytes, or None (no image)
    text: str
    label: object = None
    problems: list = dataclasses.field(default_factory=list)  # [(column, reason)]


def read_pairs(path, image_column="image", text_columns=("text",), label_column=None):
    """The rows of a batch file (a manifest: .csv, .tsv, .jsonl, .parquet) as PairRows, with
    the problems of each row found by reading the table (images are not opened here)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"batch file not found: '{path}'")
    columns = [image_column, *text_columns] + ([label_column] if label_column else [])
    try:
        table = read_table(path, columns)
    except ValueError as err:
        raise InputError(str(err)) from err
    if not len(table):
        raise InputError(f"{path} holds no rows.")
    delimited = path.suffix.lower() in (".csv", ".tsv")
    rows = []
    for i, line in enumerate(table.lines):
        row = PairRow(table.where(line), line, None, "")
        if i in table.errors:
            row.problems.append((None, table.errors[i]))
            rows.append(row)
            continue
        row.image, problem = image_source(table.cells[image_column][i], str(path.parent))
        if problem:
            row.problems.append((image_column, problem.replace("no image (the cell is empty)", "no image path")))
        parts = [table.cells[c][i] for c in text_columns]
        if delimited and parts and all(p is None for p in parts):  # a short row, not an empty cell
            row.problems.append((text_columns[0], 'no text column (an empty text is "")'))
        row.text = join_text(parts)
        if label_column:
            row.label = table.cells[label_column][i]
        rows.append(row)
    return rows


def load_rows(path, rows, on_bad_row="error", image_column="image"):
    """(kept rows, their images) after opening every image; broken rows raise (error), are
    left out (skip) or get a black image when only the image is broken (missing)."""
    images = []
    for row in rows:
        if row.image is None or row.problems:
            images.append(None)
            continue
        try:
            images.append(load_image(row.image))
        except InputError as err:
            row.problems.append((image_column, str(err)))
            images.append(None)
    bad = [row for row in rows if row.problems]
    if bad and on_bad_row == "error":
        column, reason = bad[0].problems[0]
        more = len(bad) - 1
        where = f"{path}, {bad[0].where}" + (f", column '{column}'" if column else "")
        raise InputError(f"{where}: {reason}." + (
            f" {more} more row{'s have' if more != 1 else ' has'} problems; --on-bad-row skip predicts "
            "the others, --on-bad-row missing predicts rows with a broken image as image-missing."
            if more else ""))
    kept, pixels = [], []
    for row, image in zip(rows, images):
        if row.problems and (on_bad_row == "skip" or any(c != image_column for c, _ in row.problems)):
            print(f"note: skipped {path}, {row.where}: {row.problems[0][1]}", file=sys.stderr)
            continue
        if row.problems:
            print(f"note: {path}, {row.where}: {row.problems[0][1]}; predicted as image-missing",
                  file=sys.stderr)
            image = np.zeros((1, 1, 3), np.uint8)
        kept.append(row)
        pixels.append(image)
    if not kept:
        raise InputError(f"{path}: no row left to predict ({len(bad)} broken).")
    return kept, pixels


def _label_text(label):
    return None if is_blank(label) else str(label).strip()


def _format_text(records):
    lines = []
    for record in records:
        label = f"  (label: {record['label']})" if record.get("label") is not None else ""
        lines.append(f"{record['image']}  {json.dumps(record['text'], ensure_ascii=False)}{label}")
        width = max(len(p["class_name"]) for p in record["predictions"])
        lines += [f"  {p['class_name']:<{width}}  {p['probability']:.4f}" for p in record["predictions"]]
        if "explanation" in record:
            e = record["explanation"]
            lines.append(f"  why {e['class_name']}: image {e['image_contribution']:+.4f}, text "
                         f"{e['text_contribution']:+.4f} (with neither: {e['p_neither']:.4f})")
            lines.append("  tokens: " + " ".join(f"{t}({s:+.4f})" for t, s in e["tokens"]))
    return "\n".join(lines)


def _explanations(result):
    """The --explain part of each record (JSON-ready)."""
    return [{"class_name": result["class_name"][i],
             **{key: float(result[key][i]) for key in ("image_contribution", "text_contribution", "p_neither")},
             "tokens": [[t, s] for t, s in result["tokens"][i]]} for i in range(len(result["tokens"]))]


def _parser():
    parser = argparse.ArgumentParser(prog="python -m mmkeras.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a directory written by mmkeras.export.export_model")
    parser.add_argument("--image", help="an image file (single mode)")
    parser.add_argument("--text", help="the text that goes with the image (single mode)")
    parser.add_argument("--csv", metavar="MANIFEST",
                        help="a .csv, .tsv, .jsonl or .parquet file of image and text columns (batch mode)")
    parser.add_argument("--image-column", default="image", help="the batch file's image column (default image)")
    parser.add_argument("--text-column", action="append", dest="text_columns", metavar="TEXT_COLUMN",
                        help="a text column of the batch file; repeat to join several (default: text)")
    parser.add_argument("--label-column", help="a column of true labels, shown beside each prediction")
    parser.add_argument("--on-bad-row", choices=BAD_ROW_POLICIES, default="error",
                        help="a broken row in the batch file: stop (error, default), leave it out (skip) "
                             "or predict it with a black image if only its image is broken (missing)")
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per input (default 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--explain", action="store_true",
                        help="also print what the image and the text contributed to the predicted class "
                             "and a score per token (the export's `explain` signature; slower)")
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.csv and (args.image is not None or args.text is not None):
        parser.error("give either --csv or --image/--text, not both")
    if not args.csv and args.image is None and args.text is None:
        parser.error("give --image and --text, or --csv")
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top-k and --batch-size must be positive")
    try:
        predictor = Predictor(args.model_dir)
        if args.csv:
            rows = read_pairs(args.csv, args.image_column, args.text_columns or ["text"], args.label_column)
            rows, images = load_rows(args.csv, rows, args.on_bad_row, args.image_column)
            names = [row.image if isinstance(row.image, str) else f"{args.csv}, {row.where}" for row in rows]
            texts = [row.text for row in rows]
            extra = [{"line": row.line, **({"label": _label_text(row.label)} if args.label_column else {})}
                     for row in rows]
        else:
            if args.image is None:
                print("note: no --image: a 1x1 black image is used (right for text-only models).",
                      file=sys.stderr)
            if args.text is None:
                print("note: no --text: the empty text is used (right for image-only models).",
                      file=sys.stderr)
            images = [load_image(args.image) if args.image is not None else np.zeros((1, 1, 3), np.uint8)]
            names, texts = [args.image], [args.text if args.text is not None else ""]
            extra = [{}]
        result = (predictor.explain if args.explain else predictor.predict)(images, texts,
                                                                             batch_size=args.batch_size)
    except (InputError, tf.errors.InvalidArgumentError) as err:
        message = getattr(err, "message", None) or str(err)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    top = predictor.top_k(result["probabilities"], min(args.top_k, len(predictor.class_names)))
    records = [{"image": name, "text": _as_bytes(text).decode("utf-8", errors="replace"), **more,
                "predictions": preds} for name, text, more, preds in zip(names, texts, extra, top)]
    if args.explain:
        for record, explanation in zip(records, _explanations(result)):
            record["explanation"] = explanation
    print(json.dumps(records, indent=2, ensure_ascii=False) if args.json else _format_text(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
