"""Finding and loading plug-ins of both kinds: metadata parsers and image processors.

Each kind has an entry-point group; the built-ins are declared in the
project's ``pyproject.toml`` under the same groups, so an installed package
adds its own the same way (``name = "package.module:Class"``):

* ``pyomero_upload.metadata_parsers``: ``auto`` (the default: Acq/log files
  merged with a sidecar), ``acqlog``, ``sidecar``;
* ``pyomero_upload.image_processors``: ``default`` (one 5-D image per position).

The original toolkit's convention also works: ``--module-path DIR`` with
``DIR/custom_metadata_parser.py`` (class ``CustomMetadataParser``) or
``DIR/custom_image_processor.py`` (class ``CustomImageProcessor``).
``pyomero-upload plugins`` lists what is installed.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..model import ExperimentMetadata

log = logging.getLogger(__name__)

PARSER_GROUP = "pyomero_upload.metadata_parsers"
PROCESSOR_GROUP = "pyomero_upload.image_processors"
DEFAULT_PARSER = "auto"
DEFAULT_PROCESSOR = "default"
#: The original's file and class names under --module-path, by group.
CUSTOM = {
    PARSER_GROUP: ("custom_metadata_parser.py", "CustomMetadataParser", "extract_metadata"),
    PROCESSOR_GROUP: ("custom_image_processor.py", "CustomImageProcessor", "process"),
}
KINDS = {PARSER_GROUP: "metadata parser", PROCESSOR_GROUP: "image processor"}
OUR_DISTRIBUTION = "pyomero-upload"


@dataclass(frozen=True)
class PluginEntry:
    """One plug-in that can be chosen by name."""

    name: str
    origin: str
    load: Callable[[], type]


@cache
def _entry_points(group: str) -> tuple[importlib_metadata.EntryPoint, ...]:
    """Installed entry points of ``group``, read once (a seam for tests)."""
    return tuple(importlib_metadata.entry_points(group=group))


def available(group: str) -> dict[str, PluginEntry]:
    """Every plug-in of ``group`` that can be chosen by name, ours first."""
    found: dict[str, PluginEntry] = {}
    eps = sorted(_entry_points(group),
                 key=lambda ep: getattr(getattr(ep, "dist", None), "name", "") != OUR_DISTRIBUTION)
    for ep in eps:
        if ep.name in found:
            log.warning("entry point %s (%s) shadows a %s; ignored", ep.name, ep.value,
                        KINDS[group])
            continue
        dist = getattr(ep, "dist", None)
        if dist is not None and dist.name == OUR_DISTRIBUTION:
            origin = "built in"
        else:
            origin = f"entry point {ep.value}" + (f" ({dist.name} {dist.version})" if dist else "")
        found[ep.name] = PluginEntry(ep.name, origin, ep.load)
    return found


def available_parsers() -> dict[str, PluginEntry]:
    return available(PARSER_GROUP)


def available_processors() -> dict[str, PluginEntry]:
    return available(PROCESSOR_GROUP)


def instantiate(cls: Any, where: str, method: str) -> Any:
    """``cls()``, once checked to be a class with ``method``; errors name ``where``."""
    if not isinstance(cls, type):
        raise InputError(where, f"{cls!r} is not a class")
    if not callable(getattr(cls, method, None)):
        raise InputError(where, f"class {cls.__name__} has no {method}() method")
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


def load(group: str, name: str | None = None, module_path: Path | None = None) -> Any:
    """An instance of the chosen plug-in of ``group`` (``module_path`` wins over ``name``)."""
    filename, class_name, method = CUSTOM[group]
    if module_path is not None:
        cls = load_module_class(module_path, filename, class_name)
        return instantiate(cls, str(Path(module_path) / filename), method)
    name = name or (DEFAULT_PARSER if group == PARSER_GROUP else DEFAULT_PROCESSOR)
    plugins = available(group)
    if name not in plugins:
        hint = "" if plugins else " (is pyomero-upload installed? pip install -e .)"
        raise InputError(None, f"no {KINDS[group]} named {name!r}; installed: "
                         f"{', '.join(plugins) or 'none'}{hint}")
    entry = plugins[name]
    try:
        cls = entry.load()
    except Exception as exc:
        raise InputError(
            None, f"{KINDS[group]} {name!r} ({entry.origin}) failed to load: {exc}"
        ) from None
    return instantiate(cls, f"{KINDS[group]} {name!r} ({entry.origin})", method)


def load_parser(name: str | None = None, module_path: Path | None = None) -> Any:
    """An instance of the chosen metadata parser."""
    return load(PARSER_GROUP, name, module_path)


def load_image_processor(name: str | None = None, module_path: Path | None = None) -> Any:
    """An instance of the chosen image processor (the default one without a choice)."""
    return load(PROCESSOR_GROUP, name, module_path)


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
