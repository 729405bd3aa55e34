"""The double's OMERO.tables: SharedResources and Table, with omero-py's column rules."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from typing import Any

import Ice
import omero
import omero.grid
import omero.model as M
from omero.rtypes import rstring, unwrap

from ._base import Servant, implements
from .model import TableData, plain, shallow
from .update import save_graph


@implements(omero.grid.SharedResources)
class SharedResources(Servant):
    def areTablesEnabled(self, current):
        return True

    def repositories(self, current):
        return omero.grid.RepositoryMap([], [])

    def newTable(self, repo, path, current):
        f = M.OriginalFileI()
        f.setName(rstring(path.rsplit("/", 1)[-1]))
        f.setPath(rstring(path.rsplit("/", 1)[0] if "/" in path else ""))
        f.setMimetype(rstring("OMERO.tables"))
        saved = save_graph(self, [f])[0]
        fid = unwrap(saved.id)
        self.db.tables[fid] = TableData(fid)
        return self._open(fid)

    def openTable(self, file, current):
        fid = unwrap(file.id)
        self.load("OriginalFile", fid)
        if fid not in self.db.tables:
            raise omero.ApiUsageException(message=f"OriginalFile:{fid} is not a table")
        return self._open(fid)

    def _open(self, fid: int):
        ident = Ice.Identity(f"Table-{uuid.uuid4()}", self.session.uuid)
        self.sf.adapter.add(Table(self.sf, fid), ident)
        self.sf.owned.append(ident)
        return omero.grid.TablePrx.uncheckedCast(self.sf.adapter.createProxy(ident))


COLUMN_KINDS = ("LongColumn", "DoubleColumn", "BoolColumn", "StringColumn", "FileColumn",
                "ImageColumn", "DatasetColumn", "RoiColumn", "WellColumn", "PlateColumn",
                "MaskColumn", "LongArrayColumn", "DoubleArrayColumn", "FloatArrayColumn")


@implements(omero.grid.Table)
class Table(Servant):
    """Column rules from omero-py src/omero/hdfstorageV2.py, columns.py and tables.py."""

    def __init__(self, sf: Any, fid: int) -> None:
        super().__init__(sf)
        self.fid = fid
        self.modified = False

    @property
    def data(self) -> TableData:
        return self.db.tables[self.fid]

    def getOriginalFile(self, current):
        return shallow(self.load("OriginalFile", self.fid))

    def initialize(self, cols, current):
        t = self.data
        if t.columns is not None:  # hdfstorageV2.py HdfStorage.initialize
            raise omero.ValidationException(message="Already initialized.")
        if not cols:
            raise omero.ApiUsageException(message="No columns provided")
        for c in cols:
            if not c.name:
                raise omero.ApiUsageException(message=f"Column unnamed: {c}")
            if c.name.startswith("__"):
                raise omero.ApiUsageException(message=f"Reserved column name: {c.name}")
            if type(c).__name__ not in COLUMN_KINDS:
                raise omero.ApiUsageException(message=f"unsupported column {type(c)}")
        names = [c.name for c in cols]
        for i, n in enumerate(names):
            if n in names[:i]:  # columns.py columns2definition
                raise omero.ApiUsageException(message=f"Duplicate column name: {n}")
        t.columns = [_empty(c) for c in cols]
        self.modified = True

    def _check_columns(self, cols):
        t = self.data
        if t.columns is None:
            raise omero.ApiUsageException(message="Not yet initialized")
        lengths = {len(c.values) for c in cols}
        if len(lengths) > 1:  # hdfstorageV2.py HdfStorage.append
            raise omero.ValidationException(message="Columns are of differing length")
        for c in cols:
            if isinstance(c, omero.grid.StringColumn) and any(
                    len(v.encode()) > c.size for v in c.values):  # columns.py arrays()
                raise omero.ValidationException(message=(
                        f"Maximum string (byte) length in column {c.name} is {c.size}"))
        if [(type(c).__name__, c.name) for c in cols] != [
                (type(c).__name__, c.name) for c in t.columns] or any(
                isinstance(c, omero.grid.StringColumn) and c.size > mine.size
                for c, mine in zip(cols, t.columns, strict=True)):
            # PyTables refuses rows that do not fit the table; tables.py's @remoted
            # turns that into an InternalException.
            raise omero.InternalException(message=(
                "ValueError: rows parameter cannot be converted into a recarray object "
                "compliant with table: columns "
                f"{[(type(c).__name__, c.name) for c in cols]} do not match the table"))
        return lengths.pop() if lengths else 0

    def addData(self, cols, current):
        n = self._check_columns(cols)
        for mine, c in zip(self.data.columns, cols, strict=True):
            mine.values = list(mine.values) + list(c.values)
        self.data.rows += n
        self.modified = True

    def getHeaders(self, current):
        if self.data.columns is None:
            raise omero.ApiUsageException(message="Not yet initialized")
        return [_empty(c) for c in self.data.columns]

    def getNumberOfRows(self, current):
        return self.data.rows

    def _data(self, cols: list[int], rows: list[int]):
        t = self.data
        if t.columns is None:
            raise omero.ApiUsageException(message="Not yet initialized")
        if any(r < 0 or r >= t.rows for r in rows):
            raise omero.ApiUsageException(message=f"row numbers out of range 0..{t.rows - 1}")
        out = []
        for i in cols:
            if not 0 <= i < len(t.columns):
                raise omero.ApiUsageException(message=f"no column {i}")
            c = _empty(t.columns[i])
            c.values = [t.columns[i].values[r] for r in rows]
            out.append(c)
        return omero.grid.Data(columns=out, rowNumbers=list(rows), lastModification=0)

    def read(self, cols, start, stop, current):
        return self._data(list(cols), list(range(start, min(stop, self.data.rows))))

    def readCoordinates(self, rows, current):
        return self._data(list(range(len(self.data.columns or []))), list(rows))

    def slice(self, cols, rows, current):
        return self._data(list(cols), list(rows) or list(range(self.data.rows)))

    def getAllMetadata(self, current):
        return {}

    def close(self, current):
        # omero-py src/omero/tables.py TableI.close / __close_file: a table modified
        # through this handle has its OriginalFile updated with a RawFileStore (write,
        # save): size and hash of the file as closed (RawFileBean.save), a new update event.
        if self.modified and self.fid in self.db.tables:
            self._update_file()
        self.modified = False
        self.sf.adapter.remove(current.id)

    def _update_file(self) -> None:
        """The double keeps no HDF5 file: the stored bytes are a JSON stand-in of the
        columns and rows, so the OriginalFile's size and hash are those of bytes the
        RawFileStore reads back."""
        t = self.data
        columns = [[type(c).__name__, c.name, plain(list(getattr(c, "values", [])))]
                   for c in t.columns or []]
        data = json.dumps({"columns": columns, "rows": t.rows}, sort_keys=True).encode()
        self.db.files[self.fid] = bytearray(data)
        stored = self.db.get("OriginalFile", self.fid)
        row = copy.copy(stored)
        row.setSize(omero.rtypes.rlong(len(data)))
        row.setHash(rstring(hashlib.sha1(data).hexdigest()))
        row._details = copy.copy(stored.details)
        row._details.setUpdateEvent(M.EventI(self.db.new_event(), False))
        self.db.objects[("OriginalFile", self.fid)] = row

    def delete(self, current):
        self.db.tables.pop(self.fid, None)


def _empty(c: Any) -> Any:
    if isinstance(c, omero.grid.StringColumn):
        return omero.grid.StringColumn(c.name, c.description, c.size, [])
    return type(c)(c.name, c.description, [])
