"""``pyomero-upload watch``: a facility's ingest.

Polls folders (NFS and SMB shares included: polling only), finds experiment
folders (those holding position folders), waits until each is ready
(:mod:`.ready`: a marker, the lab's log, or a quiet period) and uploads it to
OMERO or exports it as OME-TIFF/OME-Zarr with the package's own entry points,
which skip what is complete and unchanged and replace what changed.  One
report per experiment, a line per event in ``watch.jsonl``, a small SQLite
journal for attempts and back-off.  Read-only on the watched folders.

* :mod:`.scan` -- listing at a cost that grows with what changed;
* :mod:`.ready` -- the three readiness rules;
* :mod:`.journal` -- attempts, failures, back-off (bookkeeping only);
* :mod:`.service` -- the passes, the processing and the reports.
"""

from .ready import MARKER, auto_settle, parse_duration
from .service import Terminated, Watcher, WatchOptions

__all__ = ["MARKER", "Terminated", "WatchOptions", "Watcher", "auto_settle", "parse_duration"]
