"""Command-line interface: ``pyomero-upload`` (or ``python -m pyomero_upload``).

Exit codes (:data:`EXIT_CODES`, the only place they are set): 0 success, 1 bad
input (one line naming the file and the problem), 2 usage error, 3 login
refused, 4 unknown host, 5 connection refused, 6 timeout, 7 other OMERO error,
8 OMERO libraries missing, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import (
    ConnectionRefusedError_,
    InputError,
    LoginRefusedError,
    OmeroError,
    OmeroMissingError,
    OmeroTimeoutError,
    UnknownHostError,
    UsageError,
)
from .layout import DEFAULT_PLANE_PATTERN, DEFAULT_POSITION_PATTERN, Experiment, NamingRule
from .model import ExperimentMetadata

if TYPE_CHECKING:
    from .engine import EngineSpec
    from .export import ExportResult

log = logging.getLogger("pyomero_upload")

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_AUTH, EXIT_UNKNOWN_HOST, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_OMERO, EXIT_NO_OMERO = range(3, 9)
#: Exception class -> exit code; the first match in this order wins.
EXIT_CODES: dict[type[Exception], int] = {
    InputError: EXIT_INPUT,  # PluginError included: a plug-in's bug is not the server's
    UsageError: EXIT_USAGE,
    LoginRefusedError: EXIT_AUTH,
    UnknownHostError: EXIT_UNKNOWN_HOST,
    ConnectionRefusedError_: EXIT_REFUSED,
    OmeroTimeoutError: EXIT_TIMEOUT,
    OmeroMissingError: EXIT_NO_OMERO,
    OmeroError: EXIT_OMERO,
}


def exit_code(exc: Exception) -> int | None:
    """The exit code for one of our exceptions (None: not ours, a bug)."""
    for cls, code in EXIT_CODES.items():
        if isinstance(exc, cls):
            return code
    return None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def _add_layout_options(p: argparse.ArgumentParser, data: bool = True) -> None:
    if data:
        p.add_argument("data", type=Path, help="experiment folder (holding pos001, pos002, ...)")
    g = p.add_argument_group("layout")
    g.add_argument(
        "--position-pattern",
        default=DEFAULT_POSITION_PATTERN,
        help="regular expression for position folder names (default: %(default)s)",
    )
    g.add_argument(
        "--plane-pattern",
        default=DEFAULT_PLANE_PATTERN,
        help="plane file name template with {T} {C} {Z} {prefix} {ext}, or a regex with "
        "named groups T, C, Z (default: %(default)s)",
    )
    g.add_argument(
        "--channel-order",
        metavar="NAMES",
        help="comma-separated channel order, e.g. Brightfield,DIC,GFP "
        "(default: first appearance, by T then Z)",
    )
    g.add_argument(
        "--allow-missing",
        action="store_true",
        help="fill missing planes with zeros (recorded in the output) instead of failing",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="CPU cores to use (default: all): N threads decode planes (and read their "
        "headers where they come slowly, as from a network share); an upload sends up "
        "to N positions at once, sharing the N decoders",
    )


def _add_metadata_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("metadata")
    g.add_argument(
        "--parser",
        metavar="NAME",
        help="metadata parser by name (default: auto = Acq/log files merged with "
        "experiment.yml); `pyomero-upload plugins` lists them",
    )
    g.add_argument(
        "-m",
        "--module-path",
        type=Path,
        help="folder holding custom_metadata_parser.py (class CustomMetadataParser)",
    )
    g.add_argument(
        "-p",
        "--custom-metadata-parser",
        action="store_true",
        help="use CustomMetadataParser from --module-path",
    )
    g.add_argument(
        "-x", "--ignore-metadata", action="store_true", help="do not read any metadata"
    )


def _naming_rule(args: argparse.Namespace) -> NamingRule:
    """The --position-pattern/--plane-pattern rule, checked (a bad pattern: one line)."""
    try:
        rule = NamingRule(args.position_pattern, args.plane_pattern)
        rule.plane_regex()
        rule.position_regex()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return rule


def _check_parser_options(args: argparse.Namespace) -> None:
    if args.custom_metadata_parser and args.module_path is None:
        raise UsageError("--custom-metadata-parser needs --module-path DIR")


def _metadata(args: argparse.Namespace) -> ExperimentMetadata | None:
    from .metadata import load_metadata

    _check_parser_options(args)
    return load_metadata(args.data, parser=args.parser,
                         module_path=args.module_path if args.custom_metadata_parser else None,
                         ignore=args.ignore_metadata)


def _discover_with_metadata(
    args: argparse.Namespace,
) -> tuple[Experiment, ExperimentMetadata | None]:
    from .experiment import open_experiment

    _check_parser_options(args)
    rule = _naming_rule(args)
    exp, metadata = open_experiment(
        args.data,
        parser=args.parser,
        module_path=args.module_path if args.custom_metadata_parser else None,
        ignore_metadata=args.ignore_metadata,
        rule=rule,
        channel_order=args.channel_order.split(",") if args.channel_order else None,
        allow_missing=args.allow_missing,
        workers=args.workers,
    )
    for path in exp.ignored:
        log.debug("ignored (not an image plane): %s", path)
    return exp, metadata


def _format_values(values: list[int]) -> str:
    if values == list(range(values[0], values[0] + len(values))):
        return f"{values[0]}..{values[-1]}" if len(values) > 1 else str(values[0])
    return ", ".join(map(str, values))


def _print_plan(exp: Experiment) -> None:
    first = exp.positions[0]
    shapes = {(p.shape, p.dtype.name if p.dtype is not None else None) for p in exp.positions}
    print(f"Experiment: {exp.root} ({len(exp.positions)} position(s))")
    if len(shapes) == 1 and first.shape and first.dtype is not None:
        y, x = first.shape
        print(
            f"Image per position: X={x} Y={y} Z={exp.size_z} C={exp.size_c} T={exp.size_t} "
            f"(XYZCT), {first.dtype.name}"
        )
    else:
        print(f"Image per position: Z={exp.size_z} C={exp.size_c} T={exp.size_t} (XYZCT)")
    print(f"Channels (in order): {', '.join(exp.channels)}")
    print(f"T values: {_format_values(exp.t_values)}; Z values: {_format_values(exp.z_values)}")
    for p in exp.positions:
        y, x = p.shape or (0, 0)
        dtype = p.dtype.name if p.dtype is not None else "?"
        print(
            f"  {p.name}: {len(p.files)} planes, {x}x{y} {dtype}, "
            f"{exp.position_nbytes(p) / 1e6:.1f} MB"
            + (f", {len(p.missing)} missing (filled with zeros)" if p.missing else "")
        )
    print(f"Missing planes: {len(exp.missing) or 'none'}")
    if exp.ignored:
        print(f"Ignored files (not image planes): {len(exp.ignored)} (-v lists them)")
    total = exp.planes_per_position * len(exp.positions)
    print(f"Total: {total} planes, {exp.nbytes / 1e6:.1f} MB")


def cmd_plan(args: argparse.Namespace) -> int:
    exp, _ = _discover_with_metadata(args)
    if args.json:
        print(json.dumps(exp.to_dict(), indent=2))
    else:
        _print_plan(exp)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:

    zarr = args.format == "ome-zarr"
    if zarr and args.bigtiff is not None:
        raise UsageError("--bigtiff applies to --format ome-tiff only")
    if not zarr and args.ngff_version is not None:
        raise UsageError("--ngff-version applies to --format ome-zarr only")
    if not zarr and args.compression == "lz4":
        raise UsageError("--compression lz4 applies to --format ome-zarr only")
    spec = _engine_spec(args)
    exp, metadata = _discover_with_metadata(args)
    show = sys.stderr.isatty() and not args.quiet
    with contextlib.ExitStack() as stack:
        engine = None
        if spec is not None:
            from .engine import Engine

            engine = stack.enter_context(Engine(spec))
        common = {
            "metadata": metadata,
            "provenance": args.provenance,
            "workers": args.workers,
            "pyramid": args.pyramid,
            "overwrite": args.overwrite,
            "engine": engine,
        }
        result = _export(args, zarr, exp, common, show)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        print(result.summary())
    return EXIT_OK


def _export(args: argparse.Namespace, zarr: bool, exp: Experiment, common: dict,
            show: bool) -> ExportResult:
    from tqdm import tqdm

    with tqdm(
        total=exp.nbytes, unit="B", unit_scale=True, desc="export", disable=not show
    ) as bar:
        if zarr:
            from .export.ome_zarr_writer import (
                DEFAULT_COMPRESSION,
                DEFAULT_NGFF_VERSION,
                export_ome_zarr,
            )

            result = export_ome_zarr(
                exp, args.output, args.dataset, **common, on_plane=bar.update,
                compression=args.compression or DEFAULT_COMPRESSION,
                ngff_version=args.ngff_version or DEFAULT_NGFF_VERSION,
            )
        else:
            from .export import export_ome_tiff

            result = export_ome_tiff(
                exp, args.output, args.dataset, **common, on_plane=bar.update,
                compression=args.compression or "none", bigtiff=args.bigtiff,
            )
    return result


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("beyond one machine (Dask distributed: pip install "
                             "'pyomero-upload[distributed]')")
    g.add_argument("--cluster", metavar="local:N|slurm",
                   help="local:N: N worker processes on this machine; slurm: workers as "
                   "Slurm jobs (--jobs, --job-cores, --job-mem, --walltime, --queue, --account)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="a running Dask scheduler (tls://HOST:8786; tcp:// on 127.0.0.1 only)")
    g.add_argument("--scheduler-file", metavar="FILE", help="Dask's scheduler file")
    g.add_argument("--jobs", type=_positive_int, default=1, help="Slurm jobs (default 1)")
    g.add_argument("--job-cores", type=_positive_int, default=2,
                   help="cores per Slurm job (default 2)")
    g.add_argument("--job-mem", default="4GB", help="memory per Slurm job (default 4GB)")
    g.add_argument("--walltime", default="1:00:00", help="Slurm walltime (default 1:00:00)")
    g.add_argument("--queue", help="Slurm partition")
    g.add_argument("--account", help="Slurm account")


def _engine_spec(args: argparse.Namespace) -> EngineSpec | None:
    if not (args.cluster or args.scheduler or args.scheduler_file):
        return None
    from .engine import EngineSpec

    return EngineSpec(cluster=args.cluster, scheduler=args.scheduler,
                      scheduler_file=args.scheduler_file, jobs=args.jobs,
                      job_cores=args.job_cores, job_mem=args.job_mem, walltime=args.walltime,
                      queue=args.queue, account=args.account)


def _add_server_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("OMERO server (else OMERO_HOST, OMERO_PORT, OMERO_USER, "
                             "OMERO_PASSWORD, OMERO_GROUP; else --config; else a prompt)")
    g.add_argument("-s", "--host", dest="host", help="server host name")
    # No -o here (it is export's --output); upload_cli keeps the original's -o for the port.
    g.add_argument("--port", type=int, default=None, help="port (default 4064)")
    g.add_argument("-u", "--user", dest="user", help="user name")
    g.add_argument("--group", help="OMERO group to upload into")
    g.add_argument("-c", "--config", dest="config", type=Path,
                   help="YAML with host, port, user, group (never a password)")
    g.add_argument("--session-key", help="join an existing session instead of logging in "
                   "(default: the session `omero login` left, if any)")
    g.add_argument("--insecure", action="store_true",
                   help="send pixels unencrypted after an encrypted login (faster)")


def connect(args: argparse.Namespace):
    """Log in once with the upload options' settings; the caller closes the connection."""
    from .omero.connection import connect as omero_connect

    return omero_connect(host=args.host, port=args.port, user=args.user, group=args.group,
                         session_key=args.session_key, config=args.config,
                         secure=False if args.insecure else None)


def cmd_upload(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .plugins.registry import load_image_processor
    from .upload import UploadOptions, upload_experiment

    if args.custom_image_processor and args.module_path is None:
        raise UsageError("--custom-image-processor needs --module-path DIR")
    exp, metadata = _discover_with_metadata(args)
    processor = load_image_processor(
        args.image_processor, args.module_path if args.custom_image_processor else None
    )
    options = UploadOptions(
        dataset=args.dataset or exp.root.resolve().name,
        project=args.project,
        hypercube=args.hypercube,
        workers=args.workers,
        provenance=args.provenance,
        dry_run=args.dry_run,
        web_url=args.web_url or os.environ.get("OMERO_WEB_URL") or None,
        dataset_id=args.dataset_id,
        checksum=args.checksum,
        wait_s=args.wait,
    )
    from .omero import require_omero

    require_omero()
    spec = _engine_spec(args)
    options.max_uploads = args.max_uploads
    conn = connect(args)
    try:
        with contextlib.ExitStack() as stack:
            if spec is not None:
                from .engine import Engine

                options.engine = stack.enter_context(Engine(spec))
            show = sys.stderr.isatty() and not args.quiet and not args.dry_run
            with tqdm(total=exp.nbytes, unit="B", unit_scale=True, desc="upload",
                      disable=not show) as bar:
                # omero-py/Ice failures arrive as OmeroError; anything else is a bug and
                # keeps its traceback (a plug-in's arrives as PluginError).
                result = upload_experiment(conn, exp, metadata, options, processor, bar.update)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        for name in result.created if args.dry_run else []:
            print(f"would create: {name}")
        for name in result.replaced if args.dry_run else []:
            why = result.reasons.get(name)
            print(f"would replace: {name}" + (f" ({why})" if why else ""))
        print(result.summary())
    return EXIT_OK


def _duration(text: str) -> float:
    from .watch import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _settle(text: str) -> float | None:
    return None if text == "auto" else _duration(text)


def cmd_watch(args: argparse.Namespace) -> int:
    import signal

    from .watch import Terminated, Watcher, WatchOptions

    if args.as_user:
        # Uploading on behalf of another user needs a sudo login (a session created
        # for the owner through ISession.createSessionWithTimeout, or the
        # omero.sudo context), which the project's OMERO double does not serve: it
        # cannot be tested here, so it is refused rather than shipped untested.
        raise UsageError("--as-user is not available yet: it needs OMERO's sudo login "
                         "(a session for the experiment's owner), which the test double "
                         "cannot serve; run one watcher per user with that user's login")
    _check_parser_options(args)
    if args.custom_image_processor and args.module_path is None:
        raise UsageError("--custom-image-processor needs --module-path DIR")
    zarr = args.to == "ome-zarr"
    if args.to != "ome-tiff" and args.bigtiff is not None:
        raise UsageError("--bigtiff applies to --to ome-tiff only")
    if not zarr and args.ngff_version is not None:
        raise UsageError("--ngff-version applies to --to ome-zarr only")
    if not zarr and args.compression == "lz4":
        raise UsageError("--compression lz4 applies to --to ome-zarr only")
    rule = _naming_rule(args)
    open_kwargs = {
        "parser": args.parser,
        "module_path": args.module_path if args.custom_metadata_parser else None,
        "ignore_metadata": args.ignore_metadata,
        "channel_order": args.channel_order.split(",") if args.channel_order else None,
        "allow_missing": args.allow_missing,
        "workers": args.workers,
    }
    export_kwargs: dict = {"provenance": args.provenance, "workers": args.workers,
                           "pyramid": args.pyramid}
    if zarr:
        from .export.ome_zarr_writer import DEFAULT_COMPRESSION, DEFAULT_NGFF_VERSION

        export_kwargs.update(compression=args.compression or DEFAULT_COMPRESSION,
                             ngff_version=args.ngff_version or DEFAULT_NGFF_VERSION)
    else:
        export_kwargs.update(compression=args.compression or "none", bigtiff=args.bigtiff)
    upload_kwargs = {"hypercube": args.hypercube, "workers": args.workers,
                     "provenance": args.provenance, "checksum": args.checksum,
                     "wait_s": args.wait, "max_uploads": args.max_uploads,
                     "web_url": args.web_url or os.environ.get("OMERO_WEB_URL") or None}
    options = WatchOptions(
        roots=args.roots, to=args.to, report_dir=args.report_dir, output=args.output,
        every_s=args.every, settle_s=args.settle, once=args.once,
        dataset_from=args.dataset_from, project_from=args.project_from, project=args.project,
        depth=args.depth, rule=rule, retry_s=args.retry_after, json=args.json,
        open_kwargs=open_kwargs, export_kwargs=export_kwargs, upload_kwargs=upload_kwargs)
    options.check()
    connect_fn = processor = None
    if args.to == "omero":
        from .omero import require_omero
        from .omero.connection import Connection, resolve_settings
        from .plugins.registry import load_image_processor

        require_omero()
        processor = load_image_processor(
            args.image_processor, args.module_path if args.custom_image_processor else None)
        # Resolved once (a prompt at most once), the password in memory only; one
        # login per pass that uploads, closed at its end.  The first login now: a wrong
        # password or host stops the service at once, with its exit code.
        settings = resolve_settings(host=args.host, port=args.port, user=args.user,
                                    group=args.group, session_key=args.session_key,
                                    config=args.config,
                                    secure=False if args.insecure else None)
        Connection.open(settings).close()

        def connect_fn():
            return Connection.open(settings)

    spec = _engine_spec(args)
    with contextlib.ExitStack() as stack:
        engine = None
        if spec is not None:
            from .engine import Engine

            engine = stack.enter_context(Engine(spec))
        watcher = Watcher(options, connect=connect_fn, engine=engine, processor=processor)

        def on_term(signum, frame):
            watcher.stop()
            if watcher.busy:
                raise Terminated()

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            log.info("watching %s every %g s (--to %s; reports in %s)",
                     ", ".join(map(str, args.roots)), args.every, args.to, args.report_dir)
            return watcher.run()
        except Terminated:
            log.warning("stopped by SIGTERM")
            return EXIT_OK
        finally:
            signal.signal(signal.SIGTERM, previous)


def cmd_metadata(args: argparse.Namespace) -> int:
    metadata = _metadata(args) or ExperimentMetadata()
    if args.json:
        print(json.dumps(metadata.to_dict(), indent=2, ensure_ascii=False))
        return EXIT_OK
    d = metadata.to_dict()
    acq = d["acquisition"]
    print("Description:\n  " + (metadata.description or "(none)").replace("\n", "\n  "))
    print(f"Project: {metadata.project or '(none)'}")
    print(f"Tags: {', '.join(metadata.tags) or '(none)'}")
    print("Key-value pairs:")
    for k, v in metadata.kvps:
        print(f"  {k}: {v}")
    print("Channels:")
    for c in acq["channels"]:
        print(f"  {c['name']}: exposure {c['exposure_ms']} ms, excitation {c['excitation_nm']} "
              f"nm, emission {c['emission_nm']} nm")
    print(f"Z spacing: {acq['z_spacing_um']} µm; time interval: {acq['time_interval_s']} s; "
          f"timepoints: {acq['n_timepoints']}; started: {acq['started']}; "
          f"microscope: {acq['microscope']}")
    print(f"Stage positions: {len(acq['positions'])}")
    for name, table in d["tables"].items():
        print(f"Table {name}: {table['rows']} rows x {len(table['columns'])} columns")
    for f in metadata.attachments:
        print(f"Attachment: {f}")
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import registry

    kinds = [
        ("Metadata parsers (--parser NAME)", registry.PARSER_GROUP, registry.DEFAULT_PARSER,
         "-p"),
        ("Image processors (upload --image-processor NAME)", registry.PROCESSOR_GROUP,
         registry.DEFAULT_PROCESSOR, "-i"),
    ]
    for title, group, default_name, flag in kinds:
        print(f"{title}:")
        for name, entry in registry.available(group).items():
            default = "  [default]" if name == default_name else ""
            print(f"  {name:<12} {entry.origin}{default}")
        filename, cls, _method = registry.CUSTOM[group]
        print(f"  (also: --module-path DIR {flag} loads {cls} from DIR/{filename})")
    return EXIT_OK


def cmd_demo_data(args: argparse.Namespace) -> int:
    from .demo_data import write_demo_experiment

    root = write_demo_experiment(
        args.directory,
        positions=args.positions,
        timepoints=args.timepoints,
        z_sections=args.z_sections,
        size=args.size,
    )
    print(f"wrote a demo experiment to {root}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyomero-upload",
        description="Turn a time-lapse experiment (position folders of single-plane images "
        "plus the lab's logs) into one annotated 5-D image per position.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("plan", help="show what would be built; writes nothing")
    _add_layout_options(p)
    _add_metadata_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("export", help="write one OME-TIFF (or OME-Zarr) image per position")
    _add_layout_options(p)
    _add_metadata_options(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("-n", "--dataset",
                   help="dataset name (sub-folder of OUTPUT; default: DATA's name)")
    p.add_argument(
        "--format",
        choices=("ome-tiff", "ome-zarr"),
        default="ome-tiff",
        help="OME-TIFF files (default) or OME-Zarr stores (<position>.ome.zarr)",
    )
    p.add_argument(
        "--ngff-version",
        choices=("0.5", "0.4"),
        default=None,
        help="OME-Zarr: NGFF 0.5 on Zarr v3, sharded (default), or 0.4 on Zarr v2",
    )
    p.add_argument(
        "--compression",
        choices=("none", "zlib", "zstd", "lz4"),
        default=None,
        help="OME-TIFF: none (default), zlib or zstd; OME-Zarr: Blosc with zstd (default), "
        "lz4 or zlib, or none",
    )
    p.add_argument(
        "--pyramid",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write pyramid sub-resolutions (default: only for planes beyond 4096 pixels)",
    )
    p.add_argument(
        "--bigtiff",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write BigTIFF (default: only where a file may pass 2 GB)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace outputs made from other data")
    p.add_argument("--provenance", action=argparse.BooleanOptionalAction, default=True,
                   help="record the tool, version and time in each image (default: on)")
    p.add_argument("--json", action="store_true",
                   help="print a report of every output (written or skipped) as JSON")
    _add_engine_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("upload", help="upload to OMERO: one 5-D image per position")
    _add_layout_options(p)
    _add_metadata_options(p)
    _add_server_options(p)
    add_upload_options(p)
    _add_engine_options(p)
    p.add_argument("--max-uploads", type=_positive_int, default=4, metavar="K",
                   help="with --cluster/--scheduler: OMERO writers at once across the "
                   "cluster (default 4)")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("watch", help="watch folders; upload or export each experiment once it "
                       "is complete (a facility's ingest)")
    p.add_argument("roots", nargs="+", type=Path, metavar="ROOT",
                   help="watched folder(s): experiment folders anywhere below (never written)")
    p.add_argument("--to", choices=("omero", "ome-tiff", "ome-zarr"), required=True,
                   help="upload to OMERO, or export as OME-TIFF or OME-Zarr into -o OUT")
    w = p.add_argument_group("watching")
    w.add_argument("--every", type=_duration, default=60.0, metavar="DURATION",
                   help="time between passes (default 60s; 30s, 5m, 1h ...)")
    w.add_argument("--settle", type=_settle, default=None, metavar="auto|DURATION",
                   help="quiet time after which an experiment is ready without a marker or "
                   "a complete log (default auto: max(2 x interval, interval + 120 s), the "
                   "interval from the Acq file, 10 min where unknown)")
    w.add_argument("--once", action="store_true",
                   help="one pass, then exit (1 where an experiment failed); e.g. from cron")
    w.add_argument("--report-dir", type=Path, required=True, metavar="DIR",
                   help="reports (<experiment>.json, watch.jsonl) and the journal "
                   "(outside the watched folders)")
    w.add_argument("--dataset-from", choices=("folder", "yaml"), default="folder",
                   help="dataset name: the experiment folder's (default) or experiment.yml's "
                   "'dataset:'")
    w.add_argument("--project-from", choices=("parent", "yaml"),
                   help="project name: the parent folder's, or experiment.yml's 'project:' "
                   "(default: --project, else the metadata's Omero project)")
    w.add_argument("--project", help="one project for every experiment")
    w.add_argument("--depth", type=int, default=3,
                   help="folder levels below a ROOT where experiments may sit (default 3)")
    w.add_argument("--retry-after", type=_duration, default=60.0, metavar="DURATION",
                   help="first wait after a failure, doubling each time up to 6 h "
                   "(default 60s)")
    w.add_argument("--as-user", metavar="yaml|MAPFILE",
                   help="upload on behalf of each experiment's owner (not available yet)")
    w.add_argument("--json", action="store_true",
                   help="print each experiment's report on stdout, one JSON line each")
    _add_layout_options(p, data=False)
    _add_metadata_options(p)
    _add_server_options(p)
    g = p.add_argument_group("upload (--to omero)")
    g.add_argument("-y", "--hypercube", action=argparse.BooleanOptionalAction, default=True,
                   help="one 5-D image per position (default); --no-hypercube: one per file")
    g.add_argument("-i", "--custom-image-processor", action="store_true",
                   help="use CustomImageProcessor from --module-path")
    g.add_argument("--image-processor", metavar="NAME", help="image processor by name")
    g.add_argument("--checksum", action="store_true",
                   help="fingerprint the planes' contents instead of names, sizes and times")
    g.add_argument("--wait", type=_seconds, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS while another upload writes into the dataset")
    g.add_argument("--web-url", metavar="URL",
                   help="OMERO.web's address, for the reports' links (default: OMERO_WEB_URL)")
    g.add_argument("--max-uploads", type=_positive_int, default=4, metavar="K",
                   help="with --cluster/--scheduler: OMERO writers at once (default 4)")
    g = p.add_argument_group("export (--to ome-tiff, ome-zarr)")
    g.add_argument("-o", "--output", type=Path, help="output folder (OUT/<dataset>/...)")
    g.add_argument("--compression", choices=("none", "zlib", "zstd", "lz4"), default=None,
                   help="as for export")
    g.add_argument("--pyramid", action=argparse.BooleanOptionalAction, default=None,
                   help="as for export")
    g.add_argument("--bigtiff", action=argparse.BooleanOptionalAction, default=None,
                   help="as for export (ome-tiff)")
    g.add_argument("--ngff-version", choices=("0.5", "0.4"), default=None,
                   help="as for export (ome-zarr)")
    p.add_argument("--provenance", action=argparse.BooleanOptionalAction, default=True,
                   help="record the tool, version and time (default: on)")
    _add_engine_options(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("metadata", help="show the metadata parsed from an experiment folder")
    p.add_argument("data", type=Path, help="experiment folder")
    _add_metadata_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_metadata)

    p = sub.add_parser("plugins", help="list the installed metadata parsers and image processors")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("demo-data", help="write a small synthetic experiment in the real layout")
    p.add_argument("directory", type=Path, help="folder to create (must not exist or be empty)")
    p.add_argument("--positions", type=_positive_int, default=2)
    p.add_argument("--timepoints", type=_positive_int, default=3)
    p.add_argument("--z-sections", type=_positive_int, default=3)
    p.add_argument("--size", type=_positive_int, default=256, help="plane width and height")
    p.set_defaults(func=cmd_demo_data)
    return parser


def add_upload_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("upload")
    g.add_argument("-n", "--dataset", dest="dataset",
                   help="dataset name (default: the experiment folder's name)")
    g.add_argument("--dataset-id", type=_positive_int, metavar="ID",
                   help="upload into this dataset (by id), e.g. where several share a name")
    g.add_argument("--project", help="project name (default: the metadata's Omero project)")
    g.add_argument("-y", "--hypercube", action=argparse.BooleanOptionalAction, default=True,
                   help="one 5-D image per position (default); --no-hypercube: one image "
                   "per plane file")
    # No -v here (it is --verbose); upload_cli keeps the original's -v.
    g.add_argument("--provenance", action=argparse.BooleanOptionalAction, default=True,
                   help="tool, version, citation and checksums as key-value pairs")
    g.add_argument("-i", "--custom-image-processor", action="store_true",
                   help="use CustomImageProcessor from --module-path")
    g.add_argument("--image-processor", metavar="NAME",
                   help="image processor from the pyomero_upload.image_processors entry points")
    g.add_argument("--dry-run", action="store_true",
                   help="connect and report what would be created or skipped; write nothing")
    g.add_argument("--checksum", action="store_true",
                   help="fingerprint the planes' contents (reads every file; as rsync -c) "
                   "instead of their names, sizes and modification times")
    g.add_argument("--wait", type=_seconds, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS while another upload writes into the dataset "
                   "(default: refuse at once, naming it)")
    g.add_argument("--json", action="store_true",
                   help="print a report of the project, dataset and every image (id, status, "
                   "link) as JSON")
    g.add_argument("--web-url", metavar="URL",
                   help="OMERO.web's address, for the report's links (default: OMERO_WEB_URL)")


def _setup_logging(verbose: int, quiet: bool, service: bool = False) -> None:
    default = logging.INFO if service else logging.WARNING  # a service says what it does
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 0 else default)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code instead of exiting."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or usage error (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    _setup_logging(args.verbose, args.quiet, service=args.command == "watch")
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped to `head` and closed: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        return EXIT_OK
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise
        label = "usage error" if isinstance(exc, UsageError) else "error"
        print(f"{label}: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        if args.command == "watch":
            print("interrupted; the next start carries on (what was being uploaded is "
                  "redone, nothing written is left half-done)", file=sys.stderr)
        elif args.command == "upload":
            print("interrupted; images not finished are marked incomplete on the server and "
                  "are replaced when you run the same command again", file=sys.stderr)
        else:
            print("interrupted; no partial output was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED


def run() -> None:
    """The console script (and ``python -m pyomero_upload``): :func:`main`, then exit
    with its code.

    What is still alive is first frozen out of the garbage collector
    (:func:`gc.freeze`): the interpreter's collections at exit would otherwise
    walk every object of numpy, pandas and PyTables only to free memory that
    the process gives back by ending (about 90 ms of an export on the
    benchmark VM).  Threads are still joined, ``atexit`` handlers run, modules
    are torn down and files flushed and closed as usual.
    """
    code = main()
    gc.freeze()
    sys.exit(code)
