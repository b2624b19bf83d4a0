"""``RUN_DIR/report.html``: everything a run produced, in one file a browser opens offline.

This module renders; what goes in comes from the run's task (``vislab.tasks``): the headline
figures, the training curves, the task's own sections (for classification: per-class metrics,
confusion matrix, ROC curves, Grad-CAM of the most confident mistakes, filters, retrieval,
t-SNE, model summary) and the resolved configuration.  Every image is embedded as a ``data:``
URI, nothing is fetched.  A few lines of script count, once the page has loaded, the
images the browser could decode and write the count at the bottom of the page
(``#image-check``), so a broken image is seen by a reader and by the tests.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Iterable

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.8em; }
.headline { display: flex; gap: 2em; flex-wrap: wrap; margin: 1em 0; }
.figure { font-size: 2em; font-weight: 600; } .label { color: #666; font-size: 0.9em; }
img { max-width: 100%; } .row { display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { padding: 2px 10px; text-align: right; }
th { border-bottom: 1px solid #999; } td:first-child, th:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
nav a { margin-right: 0.8em; } #image-check, .note { color: #666; font-size: 0.85em; }
"""

_CHECK = """
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const el = document.getElementById("image-check");
  el.dataset.loaded = ok; el.dataset.total = imgs.length;
  el.textContent = ok === imgs.length ? `all ${ok} images loaded`
                                      : `${imgs.length - ok} of ${imgs.length} images failed to load`;
});
"""


def img(path: str, alt: str) -> str:
    """An ``<img>`` with the PNG at ``path`` embedded."""
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def lines(texts: Iterable[str]) -> str:
    return "".join(f"<p>{html.escape(t)}</p>" for t in texts)


def note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def row(items: Iterable[str]) -> str:
    return '<div class="row">' + "".join(items) + "</div>"


def table(head: list[str], rows: list[list]) -> str:
    def cells(tag: str, r: list) -> str:
        return "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in r)
    return ("<table><tr>" + cells("th", head) + "</tr>"
            + "".join("<tr>" + cells("td", r) + "</tr>" for r in rows) + "</table>")


def render(title: str, subtitle: str, headline: list[tuple[str, str]],
           sections: list[tuple[str, str, str]]) -> str:
    """The whole page: ``headline`` is ``(label, value)`` pairs, ``sections`` are
    ``(anchor, title, html)``; the page ends with the image check."""
    body = (f"<h1>{html.escape(title)}</h1><p class='label'>run {html.escape(subtitle)}"
            f" &middot; report written {time.strftime('%Y-%m-%d %H:%M')}</p>"
            + "<nav>" + "".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name, _ in sections) + "</nav>"
            + '<div class="headline" id="accuracy">'
            + "".join(f'<div><div class="figure">{html.escape(v)}</div><div class="label">{html.escape(k)}</div></div>'
                      for k, v in headline) + "</div>"
            + "".join(f'<section id="{sid}"><h2>{html.escape(name)}</h2>{content}</section>'
                      for sid, name, content in sections)
            + '<p id="image-check">images not checked (scripts are off)</p>')
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}<script>{_CHECK}</script></body></html>")


__all__ = ["img", "lines", "note", "pre", "render", "row", "table"]
