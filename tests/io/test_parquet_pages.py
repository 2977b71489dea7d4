"""Page headers: the data pages of a column chunk and the rows each holds."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfmdl.pipelines import parquet_pages


def _chunk_pages(path, column=0):
    metadata = pq.ParquetFile(path).metadata
    out = []
    with open(path, "rb") as fh:
        for group in range(metadata.num_row_groups):
            chunk = metadata.row_group(group).column(column)
            start = (chunk.dictionary_page_offset if chunk.has_dictionary_page
                     else chunk.data_page_offset)
            out.append((metadata.row_group(group).num_rows,
                        parquet_pages.page_starts(fh, start, chunk.total_compressed_size)))
    return out


@pytest.mark.parametrize("options", [
    dict(use_dictionary=False), dict(use_dictionary=False, data_page_version="2.0"),
    dict(use_dictionary=False, compression="zstd"),
    dict(use_dictionary=False, write_statistics=False), dict(use_dictionary=True)])
def test_page_starts_give_each_pages_rows(tmp_path, options):
    # with a tiny page size every write batch of 100 rows becomes one page
    rng = np.random.default_rng(0)
    values = ["|".join(map(str, rng.integers(0, 10**6, 8))) for _ in range(5000)]
    path = str(tmp_path / "t.parquet")
    pq.write_table(pa.table({"s": values, "i": np.arange(5000)}), path, row_group_size=3000,
                   data_page_size=1, write_batch_size=100, **options)
    for column in (0, 1):
        pages = _chunk_pages(path, column)
        assert [rows for rows, _ in pages] == [3000, 2000]
        assert pages[0][1] == list(range(0, 3000, 100))
        assert pages[1][1] == list(range(0, 2000, 100))


def test_long_statistics_and_truncated_headers():
    # a page header whose statistics outgrow the first read is re-read larger
    header = _data_page_header(rows=7, compressed=11, stats=b"x" * 1000)
    with pytest.raises(IndexError):
        parquet_pages.parse_page_header(header[:100])
    parsed = parquet_pages.parse_page_header(header)
    assert parsed == {"type": 0, "compressed_size": 11, "rows": 7, "header_size": len(header)}

    class File:
        def __init__(self, data):
            self.data, self.pos = data, 0

        def seek(self, pos):
            self.pos = pos

        def read(self, n):
            return self.data[self.pos:self.pos + n]

    page = header + b"\x00" * 11
    assert parquet_pages.page_starts(File(page * 3), 0, len(page) * 3) == [0, 7, 14]
    with pytest.raises(ValueError, match="ends inside the page header"):
        parquet_pages.page_starts(File(header[:300]), 0, 5000)


def _varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _i32(field_delta, value):
    return bytes([(field_delta << 4) | 5]) + _varint((value << 1) ^ (value >> 31))


def _data_page_header(rows, compressed, stats):
    """A v1 DataPageHeader in Thrift compact form with a binary max statistic."""
    statistics = bytes([(1 << 4) | 8]) + _varint(len(stats)) + stats + b"\x00"
    data_page = (_i32(1, rows) + _i32(1, 0) + _i32(1, 3) + _i32(1, 3)
                 + bytes([(1 << 4) | 12]) + statistics + b"\x00")
    return (_i32(1, 0) + _i32(1, compressed + 5) + _i32(1, compressed)
            + bytes([(2 << 4) | 12]) + data_page + b"\x00")
