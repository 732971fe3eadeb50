"""Write ``docs/openapi.yaml`` from :data:`igw_core.openapi.DOCUMENT`.

    python scripts/openapi_doc.py          # (re)write the file
    python scripts/openapi_doc.py --check  # exit 1 when the file is stale

The YAML is generated, never edited by hand: change ``igw_core/openapi.py`` and run this.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "openapi.yaml"
HEADER = ("# Generated from igw_core/openapi.py by scripts/openapi_doc.py: do not edit.\n"
          "# GET /openapi.json answers the same document as JSON.\n")


def render() -> str:
    """Return the text ``docs/openapi.yaml`` should hold."""
    if str(ROOT) not in sys.path:  # run as a script from a checkout without installing
        sys.path.insert(0, str(ROOT))
    from igw_core.openapi import document_bytes

    # Parsed back from the served JSON: the same document, and no object shared between two
    # places (which YAML would write as anchors and aliases).
    document = json.loads(document_bytes())
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    """Write the file, or with ``--check`` report whether it is stale; return the status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when docs/openapi.yaml is stale")
    args = parser.parse_args(argv)
    text = render()
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else None
    if args.check:
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run python scripts/openapi_doc.py",
                  file=sys.stderr)
            return 1
        return 0
    if current != text:
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
