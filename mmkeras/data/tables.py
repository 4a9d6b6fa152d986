"""Manifest tables: one row per example, read from .csv, .tsv, .jsonl or .parquet.

`read_table(path, columns)` returns every data row with where it stands in the file, as
an editor shows it: CSV/TSV line numbers count the header as line 1, so the first data
row is line 2 (a quoted cell spanning lines: the line the row starts on); a JSONL record
is its own line; a Parquet row is its row index, counted from 0. A cell the row lacks
(a short CSV row, an absent JSONL key, a Parquet null) reads as None.
"""

import csv
import dataclasses
import json
import os

import numpy as np

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")


@dataclasses.dataclass
class Table:
    """The rows of a manifest: `cells[column][i]` is row i's cell, `lines[i]` where it is."""

    path: str
    columns: list  # the columns the file has (CSV header, Parquet schema, keys seen in JSONL)
    cells: dict  # column -> list of cells (str, int, float, bytes, dict or None)
    lines: list  # int per row: line number, or row index for Parquet
    errors: dict  # row position -> why the row could not be read at all (malformed JSONL)

    @property
    def line_kind(self):
        return "row index" if self.path.lower().endswith(".parquet") else "line"

    def where(self, line):
        """'line 7' or, for Parquet, 'row index 7 (Parquet rows counted from 0)'."""
        if self.line_kind == "row index":
            return f"row index {line} (Parquet rows counted from 0)"
        return f"line {line}"

    def __len__(self):
        return len(self.lines)


def table_format(path):
    """'csv', 'tsv', 'jsonl' or 'parquet' from the suffix; ValueError otherwise."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"A manifest must be one of {', '.join(TABLE_SUFFIXES)}. Received "
                         f"'{path}' (suffix {suffix!r}).")
    return suffix[1:]


def read_table(path, columns):
    """The `columns` of the manifest at `path` (a Table). A column absent from the whole
    file is an error that lists the columns found."""
    path = os.fspath(path)
    fmt = table_format(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Manifest file not found: '{path}'.")
    columns = list(dict.fromkeys(columns))
    try:
        table = {"csv": _read_delimited, "tsv": _read_delimited, "jsonl": _read_jsonl,
                 "parquet": _read_parquet}[fmt](path, columns)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err}).") from err
    except csv.Error as err:
        raise ValueError(f"{path} is not a readable {fmt.upper()} file ({err}).") from err
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(repr(c) for c in missing)}. The file has the "
                         f"columns {table.columns}; name the right ones (image_column=, text_columns=, "
                         "label_column=, split_column=; --image-column etc. on the command line).")
    return table


def _read_delimited(path, columns):
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    cells = {c: [] for c in columns}
    lines = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty: a manifest needs a header line naming its columns.")
        header = [h.strip() for h in header]
        position = {name: i for i, name in enumerate(header)}
        end = reader.line_num  # last physical line read so far
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row:  # a blank line
                continue
            lines.append(start)
            for c in columns:
                i = position.get(c)
                cells[c].append(row[i] if i is not None and i < len(row) else None)
    return Table(path, header, cells, lines, {})


def _read_jsonl(path, columns):
    cells = {c: [] for c in columns}
    lines, errors, seen = [], {}, {}
    with open(path, encoding="utf-8-sig") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                record, errors[len(lines)] = {}, f"not valid JSON ({err.msg} at column {err.colno})"
            if not isinstance(record, dict):
                record, errors[len(lines)] = {}, f"not a JSON object (a {type(record).__name__})"
            seen.update(dict.fromkeys(record))
            lines.append(number)
            for c in columns:
                cells[c].append(record.get(c))
    return Table(path, list(seen), cells, lines, errors)


def _read_parquet(path, columns):
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    present = [c for c in columns if c in names]
    data = pq.read_table(path, columns=present)
    cells = {c: data.column(c).to_pylist() for c in present}
    return Table(path, names, cells, list(range(data.num_rows)), {})


def is_blank(cell):
    """An empty cell: None, NaN, or a string of whitespace."""
    if cell is None:
        return True
    if isinstance(cell, float) and np.isnan(cell):
        return True
    return isinstance(cell, str) and not cell.strip()
