"""Where the data pages of a Parquet column chunk start, read from their headers.

Why: tensorflow-io 0.37.1's Parquet kernel reads a row range of a string
(BYTE_ARRAY) column with one ``ReadBatch`` call and copies the strings only
afterwards. When the range spans two data pages, the strings of the first page
point into a buffer the reader has already released, and come back as garbage
(seen here with pyarrow's default 1 MiB pages and row groups of 100k rows; a
range inside one page always reads correctly, and numeric columns are copied at
once and not affected). `tfmdl.pipelines.parquet` therefore cuts its reads at the
page starts this module finds.

The footer does not list pages, so `page_starts` walks the page headers of a
column chunk: each header (Thrift compact protocol, uncompressed even in
compressed files) gives the page's type, its row count and its size, which leads
to the next header. That is one small read per page.
"""

from __future__ import annotations

from typing import BinaryIO, Callable, Dict, List

_DATA_PAGE, _DATA_PAGE_V2 = 0, 3
_FIRST_READ = 256
# Thrift compact types
_BOOL_TRUE, _BOOL_FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY = 1, 2, 3, 4, 5, 6, 7, 8
_LIST, _SET, _MAP, _STRUCT = 9, 10, 11, 12


class _CompactReader:
    """Just enough of Thrift's compact protocol to read a `PageHeader`."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        value = self.data[self.pos]  # IndexError: the buffer ended inside the header
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = value = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, kind: int) -> None:
        if kind in (_BOOL_TRUE, _BOOL_FALSE):
            return  # the value is in the field header
        if kind == _BYTE:
            self.pos += 1
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.pos += 8
        elif kind == _BINARY:
            size = self.varint()  # read before pos is taken: varint moves it
            self.pos += size
        elif kind in (_LIST, _SET):
            self._skip_list()
        elif kind == _MAP:
            self._skip_map()
        elif kind == _STRUCT:
            self.struct(lambda field, kind: False)
        else:
            raise ValueError(f"unknown Thrift compact type {kind}")

    def _element(self, kind: int) -> None:
        # booleans inside containers take one byte each
        self.skip(_BYTE if kind in (_BOOL_TRUE, _BOOL_FALSE) else kind)

    def _skip_list(self) -> None:
        header = self.byte()
        size, kind = header >> 4, header & 0x0F
        if size == 15:
            size = self.varint()
        for _ in range(size):
            self._element(kind)

    def _skip_map(self) -> None:
        size = self.varint()
        if size:
            kinds = self.byte()
            for _ in range(size):
                self._element(kinds >> 4)
                self._element(kinds & 0x0F)

    def struct(self, visit: Callable[[int, int], bool]) -> None:
        """Reads a struct; ``visit(field_id, kind)`` reads a field's value and
        returns True, or returns False to have it skipped."""
        last = 0
        while True:
            header = self.byte()
            if header == 0:
                return
            delta, kind = header >> 4, header & 0x0F
            field = last + delta if delta else self.zigzag()
            last = field
            if not visit(field, kind):
                self.skip(kind)


def parse_page_header(data: bytes) -> Dict[str, int]:
    """``{"type", "compressed_size", "rows", "header_size"}`` of the `PageHeader` at
    the start of ``data`` ("rows" for data pages only). Raises IndexError when
    ``data`` ends inside the header."""
    reader = _CompactReader(data)
    out: Dict[str, int] = {}

    def data_page(field: int, kind: int) -> bool:
        # DataPageHeader.num_values (1; rows of a flat column without nulls) and
        # DataPageHeaderV2.num_rows (3)
        if kind == _I32 and field == (3 if out["type"] == _DATA_PAGE_V2 else 1):
            out["rows"] = reader.zigzag()
            return True
        return False

    def header(field: int, kind: int) -> bool:
        if field in (1, 3) and kind == _I32:
            out["type" if field == 1 else "compressed_size"] = reader.zigzag()
            return True
        if field in (5, 8) and kind == _STRUCT:
            reader.struct(data_page)
            return True
        return False

    reader.struct(header)
    out["header_size"] = reader.pos
    return out


def page_starts(fh: BinaryIO, offset: int, length: int) -> List[int]:
    """Row offsets (within the row group) at which the data pages of the column
    chunk at ``fh[offset:offset + length]`` start."""
    starts: List[int] = []
    pos, end, row = offset, offset + length, 0
    while pos < end:
        header = _read_header(fh, pos)
        pos += header["header_size"] + header["compressed_size"]
        if header["type"] in (_DATA_PAGE, _DATA_PAGE_V2):
            starts.append(row)
            row += header["rows"]
    return starts


def _read_header(fh: BinaryIO, pos: int) -> Dict[str, int]:
    size = _FIRST_READ
    while True:
        fh.seek(pos)
        data = fh.read(size)
        try:
            return parse_page_header(data)
        except IndexError:
            if len(data) < size:
                raise ValueError(f"the file ends inside the page header at byte {pos}") from None
            size *= 4  # page statistics made the header longer
