"""``RUN_DIR/report.html``: everything a run produced, in one file a browser opens offline.

Sections: the headline figures, training curves, final metrics per class, confusion matrix,
ROC curves, the most confident test mistakes with Grad-CAM of the predicted and the true class,
first-layer and dead filters, a retrieval example with precision@k, a t-SNE map of the
embeddings, the model summary and the resolved configuration.  Every image is embedded as a
``data:`` URI, nothing is fetched.  A few lines of script count, once the page has loaded, the
images the browser could decode and write the count at the bottom of the page
(``#image-check``), so a broken image is seen by a reader and by the tests.
"""

from __future__ import annotations

import base64
import html
import json
import os
import time

from vislab.errors import UserError

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


def _img(path: str, alt: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _lines(lines: list[str]) -> str:
    return "".join(f"<p>{html.escape(line)}</p>" for line in lines)


def _table(head: list[str], rows: list[list]) -> str:
    def cells(tag: str, row: list) -> str:
        return "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in row)
    return ("<table><tr>" + cells("th", head) + "</tr>"
            + "".join("<tr>" + cells("td", r) + "</tr>" for r in rows) + "</table>")


def _explained(ctx, method: str, options, render) -> str:
    """A section made by ``render(result)`` from an explanation method, or a note saying why
    this model has none (e.g. no convolution for a linear classifier)."""
    from vislab.explain.run import explain
    try:
        result = explain(ctx, method, options)
    except UserError as e:
        return f"<p class='note'>not available for this model: {html.escape(str(e))}</p>"
    return render(result)


def _filters_section(res) -> str:
    table = _table(["layer", "type", "channels", "dead (output always 0)", "dead (constant)"],
                   [[r["layer"], r["kind"], r["channels"], len(r["zero"]), len(r["constant"])]
                    for r in res.data["layers"]])
    return _img(res.files[0], "first-layer filters") + _lines(res.lines[:2]) + table


def _model_summary(ctx) -> str:
    """The per-layer table of :func:`vislab.analysis.summarize` on one input of the run's size;
    parameters per top-level module where the model cannot be traced."""
    from vislab.analysis import summarize
    size = (ctx.stats["in_chans"], *ctx.stats["image_size"])
    try:
        return summarize(ctx.model, size, name=ctx.cfg.model.name).table()
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        rows = [f"{name or '(model)':30s} {sum(p.numel() for p in m.parameters()):>12,}"
                for name, m in [("", ctx.model), *ctx.model.named_children()]]
        return f"parameters per module (no per-layer trace: {e})\n" + "\n".join(rows)


def build_report(run_dir: str, device: str = "auto", out: str | None = None, log=print) -> str:
    """Write the report of a trained run (default ``RUN_DIR/report.html``) and return its path.
    A run not yet evaluated is evaluated first (``eval.json``, confusion and ROC plots);
    the explanation images go to ``RUN_DIR/explain/`` as ``vislab explain`` writes them."""
    from vislab.engine.checkpoint import atomic_write_text
    from vislab.engine.run import evaluate
    from vislab.explain.run import Options, RunContext
    from vislab.report.plots import plot_curves

    t0 = time.perf_counter()
    ctx = RunContext(run_dir, device)
    eval_path, plots = os.path.join(run_dir, "eval.json"), os.path.join(run_dir, "plots")
    if not all(os.path.exists(p) for p in (eval_path, os.path.join(plots, "confusion.png"),
                                           os.path.join(plots, "roc.png"))):
        log(f"{run_dir} is not evaluated yet: evaluating on the test set first")
        evaluate(run_dir, device=device)
    with open(eval_path) as f:
        ev = json.load(f)
    curves = [os.path.join(plots, f"{n}.png") for n in ("loss", "accuracy")]
    if not all(os.path.exists(p) for p in curves):
        curves = plot_curves(os.path.join(run_dir, "metrics.jsonl"), plots)
    if not curves:
        raise UserError(f"{run_dir} has no training history (metrics.jsonl); train it with `vislab train`")

    with open(os.path.join(run_dir, "config.yaml")) as f:
        config_text = f.read()

    title = f"{ev['model']} on {ev['dataset']}"
    sections = [
        ("curves", "Training curves", '<div class="row">' + "".join(_img(p, os.path.basename(p)) for p in curves) + "</div>"),
        ("metrics", "Final metrics", _per_class(ev)),
        ("confusion", "Confusion matrix",
         _img(os.path.join(plots, "confusion.png"), "confusion matrix")
         + _lines(["most confused: " + ", ".join(f"{m['true']} as {m['predicted']} ({m['count']})"
                                                  for m in ev.get("most_confused", [])[:5])])),
        ("roc", "ROC curves (one class against the rest)", _img(os.path.join(plots, "roc.png"), "ROC curves")),
        ("mistakes", "Most confident mistakes, with Grad-CAM",
         _explained(ctx, "mistakes", Options(k=6),
                    lambda r: _lines(r.lines[:1]) + "".join(_img(p, "mistakes") for p in r.files))),
        ("filters", "First-layer filters and dead filters", _explained(ctx, "filters", Options(), _filters_section)),
        ("retrieval", "Image retrieval in the latent space",
         _explained(ctx, "retrieval", Options(images=["test:0-1"], k=8),
                    lambda r: _lines(r.lines) + _img(r.files[0], "retrieval"))),
        ("tsne", "t-SNE map of the test embeddings",
         _explained(ctx, "tsne", Options(limit=1000), lambda r: _img(r.files[0], "t-SNE map"))),
        ("summary", "Model summary", _pre(_model_summary(ctx))),
        ("config", "Configuration (resolved)", _pre(config_text)),
    ]
    headline = [("test accuracy (top-1)", f"{ev['top1'] * 100:.2f}%"), ("top-5", f"{ev['top5'] * 100:.2f}%"),
                ("macro F1", f"{ev['macro_f1']:.3f}"), ("macro AUC", f"{ev['macro_auc']:.3f}"),
                ("test loss", f"{ev['loss']:.3f}"), ("test images", f"{ev['num_samples']}")]
    body = (f"<h1>{html.escape(title)}</h1><p class='label'>run {html.escape(os.path.abspath(run_dir))}"
            f" &middot; report written {time.strftime('%Y-%m-%d %H:%M')}</p>"
            + "<nav>" + "".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name, _ in sections) + "</nav>"
            + '<div class="headline" id="accuracy">'
            + "".join(f'<div><div class="figure">{v}</div><div class="label">{html.escape(k)}</div></div>'
                      for k, v in headline) + "</div>"
            + "".join(f'<section id="{sid}"><h2>{html.escape(name)}</h2>{content}</section>'
                      for sid, name, content in sections)
            + '<p id="image-check">images not checked (scripts are off)</p>')
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}<script>{_CHECK}</script></body></html>")
    out = out or os.path.join(run_dir, "report.html")
    atomic_write_text(out, page)
    log(f"report written in {time.perf_counter() - t0:.1f}s: {out}")
    return out


def _per_class(ev: dict) -> str:
    rows = [[c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}",
             f"{v['auc']:.3f}" if v.get("auc") is not None else "-", v["support"]]
            for c, v in ev["per_class"].items()]
    return _table(["class", "precision", "recall", "F1", "AUC", "test images"], rows)


__all__ = ["build_report"]
