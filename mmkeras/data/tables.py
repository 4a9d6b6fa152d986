"""Manifest tables: one row per example, read from .csv, .tsv, .jsonl or .parquet.

`read_table(path, columns)` returns every data row with where it stands in the file, as
an editor shows it: CSV/TSV line numbers count the header as line 1, so the first data
row is line 2 (a quoted cell spanning lines: the line the row starts on); a JSONL record
is its own line; a Parquet row is its row index, counted from 0. A cell the row lacks
(a short CSV row, an absent JSONL key, a Parquet null) reads as None.

Only the requested columns are kept, one list of cells per column, and the positions as
one int32 array, so a table costs its cells and 4 bytes a row, never an object per row.
A CSV or TSV file of PYARROW_CSV_BYTES or more is parsed by pyarrow (several times faster;
its import alone costs about 24 MiB, more than a smaller file's cells); a file pyarrow
cannot read the same way (a blank line, a cell spanning lines, a short row) is read again
by the csv module, which is the reference for what every cell holds.
"""

import array
import csv
import dataclasses
import json
import os

import numpy as np

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
PYARROW_CSV_BYTES = 32 * 2**20  # from this file size on, pyarrow parses CSV and TSV


@dataclasses.dataclass
class Table:
    """The rows of a manifest: `cells[column][i]` is row i's cell, `lines[i]` where it is."""

    path: str
    columns: list  # the columns the file has (CSV header, Parquet schema, keys seen in JSONL)
    cells: dict  # column -> list of cells (str, int, float, bytes, dict or None)
    lines: array.array  # int32 per row ("i"): line number, or row index for Parquet
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
    if os.path.getsize(path) >= PYARROW_CSV_BYTES:
        table = _read_delimited_pyarrow(path, columns, delimiter)
        if table is not None:
            return table
    cells = {c: [] for c in columns}
    lines = array.array("i")
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


def _read_delimited_pyarrow(path, columns, delimiter):
    """The Table the csv module would read, parsed by pyarrow; None where pyarrow cannot give
    the same cells and lines: a header spanning lines, a blank line or a cell spanning lines
    (the line numbers then differ from the row positions), a short or long row, a repeated
    column name, a byte that is not UTF-8."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None or reader.line_num != 1:
            return None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        return None
    present = [c for c in columns if c in header]
    try:
        data = pcsv.read_csv(
            path, read_options=pcsv.ReadOptions(skip_rows=1, column_names=header),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                                            ignore_empty_lines=True),
            convert_options=pcsv.ConvertOptions(include_columns=present,
                                                column_types={c: pa.string() for c in present},
                                                strings_can_be_null=False))
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    if data.num_rows + 1 != _count_lines(path):  # a blank line or a cell spanning lines
        return None
    cells = {c: data.column(c).to_pylist() if c in present else [None] * data.num_rows for c in columns}
    return Table(path, header, cells, array.array("i", range(2, data.num_rows + 2)), {})


def _count_lines(path, block=2**24):
    """Physical lines, a last line without its newline included."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(block):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _read_jsonl(path, columns):
    cells = {c: [] for c in columns}
    lines, errors, seen = array.array("i"), {}, {}
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
    return Table(path, names, cells, array.array("i", range(data.num_rows)), {})


def is_blank(cell):
    """An empty cell: None, NaN, or a string of whitespace."""
    if cell is None:
        return True
    if isinstance(cell, float) and np.isnan(cell):
        return True
    return isinstance(cell, str) and not cell.strip()


def join_text(cells):
    """The text of a row's text cells: the non-blank ones, stripped, joined by a space."""
    return " ".join(str(c).strip() for c in cells if not is_blank(c))
