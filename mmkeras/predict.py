"""Predict with an exported model (`mmkeras.export.export_model`): TensorFlow alone.

    python -m mmkeras.predict MODEL_DIR --image a.png --text "a small red car" [--top-k 3] [--json]
    python -m mmkeras.predict MODEL_DIR --csv pairs.csv [--top-k 3] [--json] [--batch-size 64]

The CSV has a header with the columns `image` (a path, relative to the CSV's folder) and
`text` (may be empty). The model is loaded with `tf.saved_model.load`; no Keras model or
mmkeras layer is needed. Images are decoded with Pillow, EXIF rotation applied, and
converted to RGB: grayscale is replicated to three channels, the alpha channel of RGBA
(and LA, or palette images with transparency) is dropped. A file that cannot be read as
an image, a CSV row without a text column, or a missing model stops the command with a
one-line message on stderr and exit code 2, naming the file and row.

In Python, `Predictor(MODEL_DIR).predict(images, texts)` takes a list of arrays (any
sizes; uint8 or float pixels in [0, 255]; 2-D grayscale, 1, 2, 3 or 4 channels) or a 4-D
batch, and a list of str / bytes. Float images go to the `serving_float` signature,
where NaN pixels read as 0 and values are clipped to [0, 255].
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

EXIT_BAD_INPUT = 2


class InputError(ValueError):
    """Input that cannot be served, with a message meant for the person who gave it."""


def load_image(path):
    """An image file as a uint8 (H, W, 3) RGB array (grayscale replicated, alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: '{path}'")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"cannot read '{path}' as an image ({type(err).__name__}: {err})") from err


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
        pixels = [as_rgb(image) for image in images]
        encoded = [_as_bytes(text) for text in texts]
        num_classes = len(self.class_names)
        probabilities = np.zeros((len(texts), num_classes), np.float32)
        class_id = np.zeros(len(texts), np.int64)
        groups = {}
        for i, image in enumerate(pixels):
            groups.setdefault((image.shape, image.dtype.str), []).append(i)
        for (_, dtype), rows in groups.items():
            serve = self._serve if dtype == np.dtype(np.uint8).str else self._serve_float
            if serve is None:
                raise InputError("this export has no `serving_float` signature: give uint8 images.")
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                out = serve(image=tf.constant(np.stack([pixels[i] for i in chunk])),
                            text=tf.constant([encoded[i] for i in chunk], dtype=tf.string))
                probabilities[chunk] = out["probabilities"].numpy()
                class_id[chunk] = out["class_id"].numpy()
        return {"probabilities": probabilities, "class_id": class_id,
                "class_name": [self.class_names[i] for i in class_id]}

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


def read_pairs(csv_path):
    """[(image path, text)] from a CSV with columns `image` and `text` (header required)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"CSV file not found: '{csv_path}'")
    pairs = []
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"image", "text"} <= set(reader.fieldnames):
                raise InputError(f"{csv_path}: the header must name the columns 'image' and 'text'. "
                                 f"Received {reader.fieldnames}.")
            for line, row in enumerate(reader, start=2):
                image, text = (row.get("image") or "").strip(), row.get("text")
                if not image:
                    raise InputError(f"{csv_path}, line {line}: no image path.")
                if text is None:
                    raise InputError(f"{csv_path}, line {line}: no text column (an empty text is \"\").")
                pairs.append((csv_path.parent / image, text))
    except UnicodeDecodeError as err:
        raise InputError(f"{csv_path} is not UTF-8 text ({err}).") from err
    except csv.Error as err:
        raise InputError(f"{csv_path} is not a readable CSV ({err}).") from err
    if not pairs:
        raise InputError(f"{csv_path} holds no rows.")
    return pairs


def _format_text(records):
    lines = []
    for record in records:
        lines.append(f"{record['image']}  {json.dumps(record['text'], ensure_ascii=False)}")
        width = max(len(p["class_name"]) for p in record["predictions"])
        lines += [f"  {p['class_name']:<{width}}  {p['probability']:.4f}" for p in record["predictions"]]
    return "\n".join(lines)


def _parser():
    parser = argparse.ArgumentParser(prog="python -m mmkeras.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a directory written by mmkeras.export.export_model")
    parser.add_argument("--image", help="an image file (single mode)")
    parser.add_argument("--text", help="the text that goes with the image (single mode)")
    parser.add_argument("--csv", help="a CSV of `image,text` rows (batch mode)")
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per input (default 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
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
            pairs = read_pairs(args.csv)
            images = [load_image(path) for path, _ in pairs]
            names, texts = [str(path) for path, _ in pairs], [text for _, text in pairs]
        else:
            if args.image is None:
                print("note: no --image: a 1x1 black image is used (right for text-only models).",
                      file=sys.stderr)
            if args.text is None:
                print("note: no --text: the empty text is used (right for image-only models).",
                      file=sys.stderr)
            images = [load_image(args.image) if args.image is not None else np.zeros((1, 1, 3), np.uint8)]
            names, texts = [args.image], [args.text if args.text is not None else ""]
        result = predictor.predict(images, texts, batch_size=args.batch_size)
    except (InputError, tf.errors.InvalidArgumentError) as err:
        message = getattr(err, "message", None) or str(err)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    top = predictor.top_k(result["probabilities"], min(args.top_k, len(predictor.class_names)))
    records = [{"image": name, "text": _as_bytes(text).decode("utf-8", errors="replace"),
                "predictions": preds} for name, text, preds in zip(names, texts, top)]
    print(json.dumps(records, indent=2, ensure_ascii=False) if args.json else _format_text(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
