"""Reads a Maestro lake with pyarrow, polars and DuckDB and prints row counts per table as JSON.

Used by the CLI tests to prove the lake reads unchanged outside Maestro.
"""
import json
import sys
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as ds

lake = Path(sys.argv[1])
counts = {}
tables = [d for folder in ("raw", "derived") if (lake / folder).is_dir() for d in (lake / folder).iterdir()]
for table_dir in sorted(tables):
    files = sorted(table_dir.rglob("*.parquet"))
    if not files:
        continue
    name = table_dir.name
    arrow_rows = ds.dataset(str(table_dir), format="parquet", partitioning="hive").count_rows()
    polars_rows = pl.scan_parquet(str(table_dir / "**" / "*.parquet"), hive_partitioning=True).select(pl.len()).collect().item()
    duck_rows = duckdb.sql(
        f"select count(*) from read_parquet('{table_dir}/**/*.parquet', hive_partitioning = true)"
    ).fetchall()[0][0]
    counts[name] = {"pyarrow": arrow_rows, "polars": polars_rows, "duckdb": duck_rows}
print(json.dumps(counts, sort_keys=True))
