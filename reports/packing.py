"""What the report shows only on demand, packed: the per-case heatmaps, the results of each known
deviation, every reproducer and the click-to-explain table, as JSON objects deflated and written in
base64 into the page. The report's script unpacks one (the browser's DecompressionStream) the first
time a reader opens a part it holds, and draws only that part.

A full default run's report is then a few MB instead of 14, and the page holds only what is on
screen: its first screen loads and scrolls without parsing 10 000 heatmap cells and 1000 scripts.
Base64 has only letters, digits, '+', '/' and '=': nothing in it can close its script element.
"""

from __future__ import annotations

import base64
import json
import zlib

# zlib's level 6: on a full default run's parts 2% larger than level 9's, in half its time (0.2 s).
LEVEL = 6


def pack(value: object) -> str:
    """value as JSON, zlib-deflated (DecompressionStream's "deflate"), in base64."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # "replace", as the page itself is written: a lone surrogate (a path decoded with
    # surrogateescape) has no UTF-8 and would leave no report at all; it is packed as "?".
    return base64.b64encode(zlib.compress(text.encode("utf-8", "replace"), LEVEL)).decode("ascii")


def unpack(text: str) -> object:
    """What pack packed (tests read a report's packed parts with it)."""
    return json.loads(zlib.decompress(base64.b64decode(text)).decode("utf-8"))
