"""Tracking in an email's HTML: links rewritten through the click redirect, an open pixel.

Pure string work (no database, no network): the SMTP provider calls it with the signing
functions of `app.services.links`. Only absolute http(s) links are rewritten: `mailto:`,
`tel:`, `#anchors` and Cairn's own links (unsubscribe, preferences, tracking) stay as they
are, so an unsubscribe link never turns into a tracked click.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable

# `href=` inside an `<a ...>` tag, quoted or not. Group 1: everything before the value,
# group 2: the quote (or nothing), group 3: the value.
_A_HREF = re.compile(
    r"""(<a\b[^>]*?\shref\s*=\s*)(?:(["'])(.*?)\2|([^\s"'>]+))""",
    re.IGNORECASE | re.DOTALL,
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def rewrite_links(
    body: str, track: Callable[[str], str], *, keep_prefixes: Iterable[str] = ()
) -> str:
    """Every `<a href="http(s)://...">` through `track(target)`, but for `keep_prefixes`."""
    keep = tuple(keep_prefixes)

    def replace(match: re.Match[str]) -> str:
        raw = match.group(3) if match.group(2) else match.group(4)
        target = html.unescape(raw).strip()
        lowered = target.lower()
        if not lowered.startswith(("http://", "https://")) or (keep and target.startswith(keep)):
            return match.group(0)
        return f'{match.group(1)}"{html.escape(track(target), quote=True)}"'

    return _A_HREF.sub(replace, body)


def add_pixel(body: str, pixel_url: str) -> str:
    """A 1×1 image of `pixel_url` before the last `</body>` (at the end without one)."""
    tag = (
        f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    ends = list(_BODY_END.finditer(body))
    if not ends:
        return body + tag
    at = ends[-1].start()
    return body[:at] + tag + body[at:]
