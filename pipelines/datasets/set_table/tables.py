"""Streaming reads of a long-format point table (Parquet or CSV, one file or a folder of shards).

One row per point: a set-id column, one or more target columns, feature columns (default: all the
others) and optionally a split column. Files are read in record batches with pyarrow (Parquet by row
group, CSV by block), never whole. Rows of a set may lie anywhere, in any shard.

Three passes build the dataset on one machine:

1. `scan_sets` reads only the set, target and split columns: rows per set, each set's one target and
   split (checked: a set has one), the classes; from this come the split sizes, the set sizes and
   the refusals (test-only classes, sets over `max_points`) before anything is written.
2. `spill` reads the features (checked: numbers, finite) and writes each row into one of B bucket
   files per split by a hash of its set id (Arrow IPC, in a temporary folder).
3. `grouped_sets` loads one bucket at a time and yields its sets. Memory is one bucket (the table
   over B), not the table.

Under Apache Beam, `read_chunk` turns one row group into (set id, rows) pairs for a GroupByKey and
`assemble` makes one set of the grouped rows, in the same order as on one machine.
Errors are `DataFormatError`s naming the file and row (or the set id). No TensorFlow here.

Example:

    import pyarrow as pa, pyarrow.parquet as pq
    from pipelines.datasets.set_table import tables
    pq.write_table(pa.table({"sid": ["a", "a", "b"], "y": ["u", "u", "v"], "x": [1.0, 2.0, 3.0]}),
                   "/tmp/points.parquet")
    spec = tables.TableSpec.open("/tmp/points.parquet", set_column="sid", target_columns=["y"])
    scan = tables.scan_sets(spec)
    assert scan.counts == {"a": 2, "b": 1} and spec.feature_columns == ["x"]
"""

from __future__ import annotations

import dataclasses
import pathlib
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.datasets import DataFormatError, DataNotFoundError

SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
BATCH_ROWS = 65_536
CSV_BLOCK_BYTES = 4 << 20


def _data_files(path: pathlib.Path) -> list:
    if not path.exists():
        raise DataNotFoundError(f"{path}: no such file or folder; pass a Parquet or CSV file, or a folder "
                                "of them (shards)")
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise DataFormatError(f"{path}: not a .parquet, .pq or .csv file; set_table reads Parquet or "
                                  "CSV tables (for one file per set use set_folder)")
        return [path]
    files = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).parts
        # Spark, Dask and Hive leave _SUCCESS, _metadata and .crc files beside the shards.
        if not p.is_file() or any(part[:1] in "._" for part in rel):
            continue
        if p.suffix.lower() not in SUFFIXES:
            raise DataFormatError(f"{p}: not a .parquet, .pq or .csv shard; move it out of {path}")
        files.append(p)
    if not files:
        raise DataFormatError(f"{path}: no .parquet, .pq or .csv files in this folder")
    return files


def _arrow_error(where, e) -> DataFormatError:
    text = " ".join(str(e).split())
    return DataFormatError(f"{where}: cannot be read ({text}); the file is truncated, corrupt or "
                           "malformed: write it again")


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)


def _is_label(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_boolean(t) or pa.types.is_dictionary(t))


@dataclasses.dataclass
class TableSpec:
    """The files and the roles of their columns, checked against every file's schema."""

    root: pathlib.Path
    files: list
    set_column: str
    target_columns: list
    feature_columns: list
    split_column: str | None
    task: str                     # "classification" or "regression" (decided from "auto" here)
    formats: list                 # "parquet" or "csv", per file
    num_rows: list                # per file (Parquet: from the footer; CSV: None until read)

    @classmethod
    def open(cls, path, *, set_column, target_columns, feature_columns=None, split_column=None,
             task="auto") -> "TableSpec":
        """Lists the files and checks their columns (schemas only: footers and the CSV headers).

        The task: "regression" or "classification" when given; with "auto", a float target column
        (or several target columns) means regression, a string, integer or boolean one classification.
        """
        root = pathlib.Path(path).expanduser()
        files = _data_files(root)
        target_columns = list(target_columns)
        if not target_columns:
            raise ValueError("set_table needs a target column (--target-column)")
        fixed = [set_column, *target_columns] + ([split_column] if split_column else [])
        if len(set(fixed)) != len(fixed):
            raise ValueError(f"set_table: the set, target and split columns must differ, got {fixed}")
        schemas, formats, rows = [], [], []
        for f in files:
            fmt = SUFFIXES[f.suffix.lower()]
            schema, n = _schema(f, fmt)
            schemas.append(schema)
            formats.append(fmt)
            rows.append(n)
        first = schemas[0]
        given = feature_columns is not None and len(feature_columns) > 0
        if given:
            features = list(feature_columns)
        else:
            features = [c for c in first.names if c not in fixed]
        for f, schema in zip(files, schemas):
            for col in [*fixed, *features]:
                if col not in schema.names:
                    role = ("set" if col == set_column else "target" if col in target_columns else
                            "split" if col == split_column else "feature")
                    raise DataFormatError(f"{f}: no {role} column {col!r} (columns: {', '.join(schema.names)}); "
                                          "name an existing column, or fix the file")
            if not given:
                rest = [c for c in schema.names if c not in fixed]
                if rest != features:
                    raise DataFormatError(f"{f}: feature columns {', '.join(rest)} differ from {files[0]}'s "
                                          f"{', '.join(features)} (F={len(rest)} vs {len(features)}); give every "
                                          "shard the same columns, or choose them with feature_columns")
        if not features:
            raise DataFormatError(f"{files[0]}: no feature columns left besides {', '.join(fixed)}; a point "
                                  "needs at least one feature")
        for f, schema, fmt in zip(files, schemas, formats):
            if fmt != "parquet":
                continue  # CSV values are converted to numbers while reading (errors name the row)
            for col in features:
                if not _is_numeric(schema.field(col).type):
                    raise DataFormatError(f"{f}: feature column {col!r} is {schema.field(col).type}, not "
                                          "numeric; convert it, or leave it out with feature_columns")
        task = _decide_task(task, files[0], first, target_columns)
        return cls(root, files, set_column, target_columns, features, split_column, task, formats, rows)

    @property
    def num_features(self) -> int:
        return len(self.feature_columns)

    def chunks(self) -> list:
        """(file index, row group or None): units of work for Beam (Parquet row groups, CSV files)."""
        out = []
        for i, (f, fmt) in enumerate(zip(self.files, self.formats)):
            if fmt == "parquet":
                import pyarrow.parquet as pq

                with pq.ParquetFile(f) as pf:
                    out += [(i, g) for g in range(pf.num_row_groups)]
            else:
                out.append((i, None))
        return out

    def batches(self, index: int, columns: list, row_group=None):
        """Yields (first row, 1-based, of the batch; RecordBatch) of `columns` of file `index`."""
        f, fmt = self.files[index], self.formats[index]
        row = 1
        try:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                with pq.ParquetFile(f) as pf:
                    if row_group is not None:
                        row += sum(pf.metadata.row_group(g).num_rows for g in range(row_group))
                    groups = None if row_group is None else [row_group]
                    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns, row_groups=groups):
                        yield row, batch
                        row += batch.num_rows
            else:
                for batch in _csv_reader(f, columns, self._csv_types(columns)):
                    yield row, batch
                    row += batch.num_rows
        except (pa.ArrowException, OSError) as e:
            if fmt == "csv":
                found = locate_csv_error(f, self._csv_types(columns))
                if found:
                    raise DataFormatError(found) from e
            raise _arrow_error(f"{f} (near row {row})", e) from e

    def _csv_types(self, columns) -> dict:
        types = {self.set_column: pa.string()}
        if self.split_column:
            types[self.split_column] = pa.string()
        for c in self.target_columns:
            types[c] = pa.float64() if self.task == "regression" else pa.string()
        for c in self.feature_columns:
            types[c] = pa.float64()
        return {c: t for c, t in types.items() if c in columns}


def locate_csv_error(path, types) -> str | None:
    """The first row of a CSV file that pyarrow refused, as a message: a row with another number of
    values, or a value that is not a number in a numeric column. Read with the csv module, only
    after pyarrow failed (whose message names neither row nor value in every case)."""
    import csv

    numeric = {c for c, t in types.items() if pa.types.is_floating(t)}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            wanted = [(i, c) for i, c in enumerate(header) if c in numeric]
            for row, values in enumerate(reader, 1):
                if len(values) != len(header):
                    return (f"{path} row {row}: {len(values)} values, expected {len(header)} "
                            f"({', '.join(header)}); the file is truncated or the row malformed: fix it")
                for i, col in wanted:
                    try:
                        float(values[i])
                    except ValueError:
                        return (f"{path} row {row}: column {col!r} is {values[i]!r}, not a number; every "
                                "feature (and a regression target) must be numeric")
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None


def _csv_reader(path, columns, types):
    import pyarrow.csv as pacsv

    return pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                          convert_options=pacsv.ConvertOptions(include_columns=columns, column_types=types))


def _schema(f, fmt):
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with pq.ParquetFile(f) as pf:
                return pf.schema_arrow, pf.metadata.num_rows
        reader = _csv_reader(f, None, None)
        return reader.schema, None
    except (pa.ArrowException, OSError) as e:
        found = locate_csv_error(f, {}) if fmt == "csv" else None
        raise (DataFormatError(found) if found else _arrow_error(f, e)) from e


def _decide_task(task, where, schema, targets) -> str:
    types = {c: schema.field(c).type for c in targets}
    if task == "auto":
        task = ("regression" if len(targets) > 1 or all(pa.types.is_floating(t) for t in types.values())
                else "classification")
    if task == "classification":
        if len(targets) > 1:
            raise ValueError(f"set_table: classification takes one target column, got {', '.join(targets)}; "
                             "several target columns are a regression (task regression)")
        (col, t), = types.items()
        if not _is_label(t):
            raise DataFormatError(f"{where}: target column {col!r} is {t}; a class column holds strings or "
                                  "integers: convert it, or pass task regression")
    elif task == "regression":
        for col, t in types.items():
            if not _is_numeric(t):
                raise DataFormatError(f"{where}: target column {col!r} is {t}, not numeric; a regression "
                                      "target is a number (or pass task classification)")
    else:
        raise ValueError(f"set_table: task must be auto, classification or regression, got {task!r}")
    return task


# --- pass 1: set ids, targets, splits ------------------------------------------------------------

@dataclasses.dataclass
class Scan:
    """What the label columns say: per set its row count, target, split (None: decided by hash) and
    where it was first seen (file index, row)."""

    counts: dict
    targets: dict
    splits: dict
    first_seen: dict
    rows: int


def _as_text(array: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return pc.cast(array, pa.string())


def _where(spec, index, row) -> str:
    return f"{spec.files[index]} row {row}"


def _check_nulls(spec, index, row0, batch, columns):
    for col in columns:
        arr = batch.column(col)
        if arr.null_count:
            bad = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
            raise DataFormatError(f"{_where(spec, index, row0 + bad)}: column {col!r} is empty (null); every "
                                  "point needs a set id, a target and all its features")


def _groups(ids: np.ndarray):
    """(unique ids, row order grouping them, group offsets): rows of group k are
    order[offsets[k]:offsets[k + 1]], in their original order."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    offsets = np.r_[0, np.cumsum(np.bincount(inverse, minlength=len(uniq)))]
    return uniq, order, offsets


def _target_array(spec, index, row0, batch) -> np.ndarray:
    """The targets of a batch: strings (classification, object array) or float64 (rows, T)."""
    if spec.task == "classification":
        return _as_text(batch.column(spec.target_columns[0])).to_numpy(zero_copy_only=False)
    values = np.stack([np.asarray(pc.cast(batch.column(c), pa.float64())) for c in spec.target_columns],
                      axis=1)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise DataFormatError(f"{_where(spec, index, row0 + r)}: target {spec.target_columns[c]!r} is "
                              f"{float(values[r, c])}; a regression target must be a finite number")
    return values


def _target_value(values, row):
    return str(values[row]) if values.ndim == 1 else tuple(float(v) for v in values[row])


def _first_mismatch(values, order, offsets):
    """The first row (in `order`) whose value differs from its group's first row, or None."""
    sorted_values = values[order]
    firsts = np.repeat(sorted_values[offsets[:-1]], np.diff(offsets), axis=0)
    differ = sorted_values != firsts
    if differ.ndim > 1:
        differ = differ.any(axis=1)
    hit = np.flatnonzero(differ)
    return int(order[hit[0]]) if hit.size else None


def scan_sets(spec: TableSpec) -> Scan:
    """Pass 1 over the set, target and split columns of every file, in batches."""
    counts, targets, splits, first = {}, {}, {}, {}
    columns = [spec.set_column, *spec.target_columns] + ([spec.split_column] if spec.split_column else [])
    total = 0
    for index in range(len(spec.files)):
        for row0, batch in spec.batches(index, columns):
            _check_nulls(spec, index, row0, batch, columns)
            ids = _as_text(batch.column(spec.set_column)).to_numpy(zero_copy_only=False)
            uniq, order, offsets = _groups(ids)
            checks = [("target", _target_array(spec, index, row0, batch), targets)]
            if spec.split_column:
                checks.append(("split", _as_text(batch.column(spec.split_column)).to_numpy(zero_copy_only=False),
                               splits))
            starts = order[offsets[:-1]]
            for label, values, known in checks:
                odd = _first_mismatch(values, order, offsets)
                if odd is None:  # within the batch each set agrees; now with earlier batches
                    odd = next((int(r) for sid, r in zip(uniq.tolist(), starts)
                                if sid in known and known[sid] != _target_value(values, r)), None)
                if odd is not None:
                    sid = str(ids[odd])
                    fi, fr = first.get(sid, (index, row0 + int(starts[np.searchsorted(uniq, sid)])))
                    earlier = known.get(sid, _target_value(values, int(starts[np.searchsorted(uniq, sid)])))
                    raise DataFormatError(
                        f"{_where(spec, index, row0 + odd)}: set {sid!r} has {label} "
                        f"{_target_value(values, odd)!r} here but {earlier!r} at {_where(spec, fi, fr)}; "
                        f"all rows of a set need the same {label}")
            n = np.diff(offsets)
            for k, sid in enumerate(uniq.tolist()):
                if sid not in counts:
                    counts[sid] = 0
                    first[sid] = (index, row0 + int(starts[k]))
                    for _, values, known in checks:
                        known[sid] = _target_value(values, int(starts[k]))
                counts[sid] += int(n[k])
            total += batch.num_rows
    if not total:
        raise DataFormatError(f"{spec.root}: the table has no rows; it needs one row per point")
    return Scan(counts, targets, splits, first, total)


# --- pass 2 and 3 on one machine: buckets on disk ------------------------------------------------

def bucket_of(set_id: str, buckets: int) -> int:
    return zlib.crc32(set_id.encode()) % buckets


def feature_matrix(spec, index, row0, batch) -> np.ndarray:
    """The batch's features as float32 (rows, F), after checking they are there and finite."""
    cols = [np.asarray(pc.cast(batch.column(c), pa.float64())) for c in spec.feature_columns]
    values = np.stack(cols, axis=1) if cols else np.zeros((batch.num_rows, 0))
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        sid = _as_text(batch.column(spec.set_column))[r].as_py()
        raise DataFormatError(f"{_where(spec, index, row0 + r)} (set {sid!r}): feature "
                              f"{spec.feature_columns[c]!r} is {float(values[r, c])} (NaN, Inf or beyond "
                              "float32's range); fix or drop that point")
    return out


def spill(spec: TableSpec, split_of, buckets: int, folder: pathlib.Path) -> dict:
    """Pass 2: every row into `folder/<split>-<bucket>.arrow` (set id, order, features). `split_of`
    maps a set id to its split. Returns {split: [bucket files]}."""
    import pyarrow.ipc as ipc

    columns = [spec.set_column, *spec.feature_columns]
    schema = pa.schema([("set", pa.string()), ("order", pa.int64()),
                        *[(f"f{i}", pa.float32()) for i in range(spec.num_features)]])
    writers, files = {}, {}
    try:
        for index in range(len(spec.files)):
            for row0, batch in spec.batches(index, columns):
                _check_nulls(spec, index, row0, batch, columns)
                points = feature_matrix(spec, index, row0, batch)
                ids = _as_text(batch.column(spec.set_column)).to_numpy(zero_copy_only=False)
                uniq, inverse = np.unique(ids, return_inverse=True)
                keys = [(split_of(s), bucket_of(s, buckets)) for s in uniq.tolist()]
                order = (np.int64(index) << 40) + row0 + np.arange(batch.num_rows, dtype=np.int64)
                names = sorted(set(keys))
                code = np.array([names.index(k) for k in keys])[inverse]
                by_code = np.argsort(code, kind="stable")
                edges = np.r_[0, np.cumsum(np.bincount(code, minlength=len(names)))]
                for c, key in enumerate(names):
                    rows = by_code[edges[c]:edges[c + 1]]
                    if key not in writers:
                        path = folder / f"{key[0]}-{key[1]:05d}.arrow"
                        files.setdefault(key[0], []).append(path)
                        writers[key] = ipc.new_stream(str(path), schema)
                    writers[key].write_batch(pa.record_batch(
                        [pa.array(ids[rows], pa.string()), pa.array(order[rows]),
                         *[pa.array(points[rows, j]) for j in range(spec.num_features)]], schema=schema))
    finally:
        for w in writers.values():
            w.close()
    return {s: sorted(v) for s, v in files.items()}


def grouped_sets(bucket_files):
    """Pass 3: (set id, points (N, F) float32 in file and row order) of every set in the buckets."""
    import pyarrow.ipc as ipc

    for path in bucket_files:
        with ipc.open_stream(str(path)) as reader:
            table = reader.read_all()
        # Integer codes, not a Python string per row: a bucket's ids cost 4 bytes a point.
        encoded = pc.dictionary_encode(table.column("set")).combine_chunks()
        codes, names = encoded.indices.to_numpy(), encoded.dictionary.to_pylist()
        order = table.column("order").to_numpy()
        points = np.stack([table.column(f"f{i}").to_numpy() for i in range(table.num_columns - 2)], axis=1)
        del table, encoded
        sort = np.lexsort((order, codes))
        codes, points = codes[sort], points[sort]
        del order, sort
        edges = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(codes)]):
            yield names[codes[lo]], points[lo:hi]


# --- Beam: one row group at a time, grouped by set id ---------------------------------------------

def read_chunk(chunk, spec: TableSpec):
    """(set id, (order of its first row here, points, target, split)) for each set in one chunk."""
    index, group = chunk
    columns = [spec.set_column, *spec.target_columns, *spec.feature_columns] + (
        [spec.split_column] if spec.split_column else [])
    for row0, batch in spec.batches(index, columns, row_group=group):
        _check_nulls(spec, index, row0, batch, columns)
        points = feature_matrix(spec, index, row0, batch)
        ids = _as_text(batch.column(spec.set_column)).to_numpy(zero_copy_only=False)
        values = _target_array(spec, index, row0, batch)
        split_values = (_as_text(batch.column(spec.split_column)).to_numpy(zero_copy_only=False)
                        if spec.split_column else None)
        uniq, order, offsets = _groups(ids)
        for k, sid in enumerate(uniq.tolist()):
            rows = order[offsets[k]:offsets[k + 1]]
            first = int(rows[0])
            yield sid, ((int(index) << 40) + row0 + first, points[rows], _target_value(values, first),
                        str(split_values[first]) if split_values is not None else None)


def assemble(parts):
    """The rows of one set from `read_chunk`'s pieces, in file and row order: (points, target, split)."""
    parts = sorted(parts, key=lambda p: p[0])
    return np.concatenate([p[1] for p in parts]), parts[0][2], parts[0][3]
