"""Metadata parser plug-ins: the abstract base, the registry, and loading.

A parser is a class with ``extract_metadata(path) -> ExperimentMetadata``
(or the original toolkit's dict ``{"description", "tags", "kvps",
"tables"}``, converted here).  Parsers come from three places:

* built in: ``auto`` (the default: Acq/log files merged with a sidecar),
  ``acqlog`` and ``sidecar``;
* the entry-point group ``pyomero_upload.metadata_parsers`` of any installed
  package (``name = "package.module:Class"``);
* the original's convention: ``--module-path DIR`` with
  ``DIR/custom_metadata_parser.py`` defining ``CustomMetadataParser``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from .errors import InputError
from .model import ExperimentMetadata

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pyomero_upload.metadata_parsers"
DEFAULT_PARSER = "auto"
CUSTOM_MODULE = "custom_metadata_parser.py"
CUSTOM_CLASS = "CustomMetadataParser"


class MetadataParser(ABC):
    """Base class of metadata parsers."""

    #: Name used by ``--parser``.
    name: str = ""

    @abstractmethod
    def extract_metadata(self, path: str | Path) -> ExperimentMetadata | dict[str, Any]:
        """Return what is known about the experiment in folder ``path``."""


@dataclass(frozen=True)
class ParserEntry:
    name: str
    origin: str
    load: Callable[[], type]


def _builtin(module: str, cls: str) -> Callable[[], type]:
    return lambda: getattr(importlib.import_module(module, __package__), cls)


BUILTIN_PARSERS = {
    "auto": _builtin(".metadata", "AutoParser"),
    "acqlog": _builtin(".acqlog", "AcqLogParser"),
    "sidecar": _builtin(".metadata", "SidecarParser"),
}


def _entry_points() -> list[importlib_metadata.EntryPoint]:
    """Installed entry points of our group (a seam for tests)."""
    return list(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP))


def available_parsers() -> dict[str, ParserEntry]:
    """Every parser that can be chosen by name, built-ins first."""
    found = {
        name: ParserEntry(name, "built in", load) for name, load in BUILTIN_PARSERS.items()
    }
    for ep in _entry_points():
        if ep.name in found:
            log.warning("entry point %s (%s) shadows a parser; ignored", ep.name, ep.value)
            continue
        dist = getattr(ep, "dist", None)
        origin = f"entry point {ep.value}" + (f" ({dist.name} {dist.version})" if dist else "")
        found[ep.name] = ParserEntry(ep.name, origin, ep.load)
    return found


def _instantiate(cls: Any, where: str) -> Any:
    if not isinstance(cls, type):
        raise InputError(where, f"{cls!r} is not a class")
    if not callable(getattr(cls, "extract_metadata", None)):
        raise InputError(where, f"class {cls.__name__} has no extract_metadata(path) method")
    try:
        return cls()
    except Exception as exc:
        raise InputError(where, f"cannot create {cls.__name__}(): {exc}") from None


def load_module_class(module_path: Path, filename: str, class_name: str) -> type:
    """Load ``class_name`` from ``module_path/filename`` (the original's plug-in convention)."""
    file = Path(module_path) / filename
    if not file.is_file():
        raise InputError(file, f"plug-in file not found (expected class {class_name} in it)")
    spec = importlib.util.spec_from_file_location(f"_pyomero_plugin_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise InputError(file, "cannot load as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        problem = f"error while loading plug-in: {type(exc).__name__}: {exc}"
        raise InputError(file, problem) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise InputError(file, f"defines no class {class_name}")
    return cls


def load_parser(name: str | None = None, module_path: Path | None = None) -> Any:
    """An instance of the chosen parser (``module_path`` wins over ``name``)."""
    if module_path is not None:
        cls = load_module_class(module_path, CUSTOM_MODULE, CUSTOM_CLASS)
        return _instantiate(cls, str(Path(module_path) / CUSTOM_MODULE))
    name = name or DEFAULT_PARSER
    parsers = available_parsers()
    if name not in parsers:
        raise InputError(
            None, f"no metadata parser named {name!r}; installed: {', '.join(parsers)}"
        )
    entry = parsers[name]
    try:
        cls = entry.load()
    except Exception as exc:
        raise InputError(
            None, f"metadata parser {name!r} ({entry.origin}) failed to load: {exc}"
        ) from None
    return _instantiate(cls, f"parser {name!r} ({entry.origin})")


def coerce_metadata(result: Any, source: str) -> ExperimentMetadata:
    """Accept our model or the original's documented dict; anything else is an error."""
    if isinstance(result, ExperimentMetadata):
        return result
    if not isinstance(result, dict):
        raise InputError(
            source, f"returned {type(result).__name__}; expected ExperimentMetadata or a dict"
        )
    allowed = {"description", "tags", "kvps", "tables"}
    unknown = sorted(set(result) - allowed)
    if unknown:
        raise InputError(source, f"returned unknown key(s) {', '.join(unknown)}; allowed: "
                         "description, tags, kvps, tables")
    meta = ExperimentMetadata()
    description = result.get("description") or ""
    if not isinstance(description, str):
        raise InputError(source, "description must be a string")
    meta.description = description
    tags = result.get("tags") or []
    if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
        raise InputError(source, "tags must be a list of strings")
    meta.tags = list(dict.fromkeys(tags))
    meta.kvps = _coerce_kvps(result.get("kvps") or [], source)
    tables = result.get("tables") or []
    if isinstance(tables, dict):
        items = list(tables.items())
    elif isinstance(tables, list | tuple):
        items = [(getattr(df, "name", None) or f"Table {i + 1}", df) for i, df in enumerate(tables)]
    else:
        raise InputError(source, "tables must be a list of DataFrames or a name -> DataFrame dict")
    import pandas as pd  # only here: the original's dict contract carries DataFrames

    for name, df in items:
        if not isinstance(df, pd.DataFrame):
            raise InputError(source, f"table {name!r} is {type(df).__name__}, not a DataFrame")
        meta.tables[str(name)] = df
    return meta


def _coerce_kvps(kvps: Any, source: str) -> list[tuple[str, str]]:
    """Pairs, dicts of key -> value (or list of values), never a list's repr."""
    pairs: list[tuple[str, str]] = []

    def add(key: Any, value: Any) -> None:
        for item in value if isinstance(value, list | tuple) else [value]:
            pairs.append((str(key), str(item)))

    if isinstance(kvps, dict):
        for k, v in kvps.items():
            add(k, v)
        return pairs
    if not isinstance(kvps, list | tuple):
        raise InputError(source, "kvps must be a list of (key, value) pairs or a dict")
    for item in kvps:
        if isinstance(item, dict):
            for k, v in item.items():
                add(k, v)
        elif isinstance(item, list | tuple) and len(item) == 2:
            add(item[0], item[1])
        else:
            problem = f"kvps item {item!r} is neither a (key, value) pair nor a dict"
            raise InputError(source, problem)
    return list(dict.fromkeys(pairs))
