"""Server-side SVG charts (pygal), with no script and no CDN: the console works offline."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import pygal
from pygal.style import Style

# pygal appends a legacy `sys.meta_path` finder for its map plugins, which Cairn does not use;
# Python 3.11 warns (ImportWarning) whenever it is consulted, i.e. on every failed import in the
# process, and the test suite turns warnings into errors. Take it out again.
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PluginImportFixer"]

STYLE = Style(background="white", plot_background="white")


def line_chart(title: str, labels: Sequence[str], series: Mapping[str, Sequence[int]]) -> str:
    """An inline `<svg>` line chart of `series` over `labels`."""
    chart = pygal.Line(
        js=[],  # pygal's tooltip script would come from a CDN
        disable_xml_declaration=True,
        height=280,
        width=900,
        show_minor_x_labels=False,
        x_labels_major_count=8,
        truncate_legend=-1,
        legend_at_bottom=True,
        style=STYLE,
    )
    chart.title = title
    chart.x_labels = list(labels)
    for name, values in series.items():
        chart.add(name, list(values))
    return str(chart.render(is_unicode=True))
