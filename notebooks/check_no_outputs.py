"""Fail if a committed notebook carries outputs or execution counts (used by `make lint`)."""

import json
import sys
from pathlib import Path

bad = []
for path in sorted(Path(__file__).parent.glob("*.ipynb")):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and (cell.get("outputs") or cell.get("execution_count")):
            bad.append(path.name)
            break
if bad:
    print(f"notebooks with outputs (clear them before committing): {', '.join(bad)}")
    sys.exit(1)
