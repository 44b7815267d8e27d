"""The curation report: one self-contained HTML page, PNG plots and ``summary.json``.

``write_report(checkpoint, shards, out_dir)`` writes into ``out_dir``:

* ``report.html`` — inline CSS, every plot and preview embedded (``data:`` URIs and inline
  SVG), so the single file can be mailed or attached to an issue;
* ``timeline.png``, ``distributions.png``, ``classes.png`` — the same plots as files;
* ``summary.json`` — every number the page shows (see :func:`~.summary.summarize`).

The page is rendered from the Jinja2 template ``templates/report.html.j2`` with autoescape on.
It has one ``<section>`` per topic with a stable id: ``overview``, ``timeline``,
``distributions``, ``classes``, ``suspicious``. Counts carry ``data-count="<name>"``
attributes so tools can read them back.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import numpy as np
from tqdm.auto import tqdm

from ..data.errors import ShardError
from ..data.shards import ShardIndex, ShardSpec, cache_folder
from ..data.tario import MemberReader, local_path, stream_samples
from .checkpoint import CurationState, load_for_shards
from .summary import outcome_masks, summarize

COLORS = {"kept": "#2f9e44", "flagged": "#e03131", "pruned": "#f08c00", "weight": "#1c7ed6"}
IMAGE_SUFFIXES = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "ppm", "pgm", "tif", "tiff")
SECTIONS = ("overview", "timeline", "distributions", "classes", "suspicious")
DASH = "\u2014"
TEMPLATE = "report.html.j2"


# -- reading samples back ----------------------------------------------------------------
def read_samples(index: ShardIndex, ids: list[int], progress: bool = False) -> dict[int, dict]:
    """Raw samples (``{"__key__", "__url__", "__pos__", suffix: bytes}``) of ``ids``.

    Local uncompressed shards are read by byte offset (headers scanned once); other shards
    are streamed, reading member data only for the wanted positions. A shard that cannot be
    read gives ``{"__error__": message}`` entries instead of raising.
    """
    wanted: dict[int, dict[int, int]] = defaultdict(dict)  # shard -> position -> id
    if ids:
        shards, positions = index.locate(np.asarray(ids, dtype=np.int64))
        for sid, s, p in zip(ids, shards, positions):
            wanted[int(s)][int(p)] = int(sid)
    out: dict[int, dict] = {}
    reader = MemberReader()
    try:
        for s in tqdm(sorted(wanted), desc="reading previews", unit="shard", disable=not progress):
            url, by_pos = index.urls[s], wanted[s]
            try:
                path = local_path(url)
                layout = index.layout(s) if path is not None else None
                if layout is not None and not layout.compressed:
                    for pos, sid in by_pos.items():
                        out[sid] = reader.read(url, layout, pos)
                else:
                    for sample in stream_samples(url, lambda pos: pos in by_pos):
                        out[by_pos[sample["__pos__"]]] = sample
            except ShardError as exn:
                warnings.warn(f"report previews: {exn}", stacklevel=2)
                for sid in by_pos.values():
                    out.setdefault(sid, {"__error__": str(exn), "__url__": url})
    finally:
        reader.close()
    return out


# -- previews ------------------------------------------------------------------------------
def _svg_signal(array: np.ndarray, width: int = 168, height: int = 52) -> str:
    """An inline SVG line plot of a 1-D signal (or of each row of a [C, L] array)."""
    rows = array.reshape(1, -1) if array.ndim == 1 else array
    finite = rows[np.isfinite(rows)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = hi - lo or 1.0
    palette = ("#1c7ed6", "#e8590c", "#2f9e44", "#9c36b5")
    lines = []
    for r, row in enumerate(rows[:4]):
        n = max(len(row) - 1, 1)
        pts = " ".join(
            f"{2 + (width - 4) * i / n:.1f},{height - 2 - (height - 4) * (float(v) - lo) / span:.1f}"
            for i, v in enumerate(np.nan_to_num(row, nan=lo))
        )
        lines.append(f'<polyline fill="none" stroke="{palette[r % 4]}" stroke-width="1.4" points="{pts}"/>')
    return (
        f'<svg class="signal" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="signal preview">'
        f'<rect width="{width}" height="{height}" fill="#f8f9fa"/>{"".join(lines)}</svg>'
    )


def _png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img_tag(image: Any, alt: str = "sample preview") -> str:
    image = image.convert("RGB") if image.mode not in ("L", "RGB", "RGBA") else image
    image.thumbnail((96, 96))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return f'<img class="thumb" alt="{html.escape(alt)}" src="{_png_data_uri(buf.getvalue())}">'


def _array_image(array: np.ndarray) -> Any:
    from PIL import Image

    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if lo >= 0 and hi <= 255 and hi > 1:
        scaled = a
    else:
        scaled = (a - lo) / ((hi - lo) or 1.0) * 255
    return Image.fromarray(np.nan_to_num(scaled).clip(0, 255).astype(np.uint8))


def preview_html(sample: dict) -> str:
    """A small preview of a raw sample: images as a thumbnail, 1-D signals as a line plot."""
    if "__error__" in sample:
        return f'<span class="muted" title="{html.escape(sample["__error__"])}">unreadable</span>'
    for suffix in IMAGE_SUFFIXES:
        if suffix in sample:
            try:
                from PIL import Image

                return _img_tag(Image.open(io.BytesIO(sample[suffix])))
            except Exception as exn:  # noqa: BLE001 - a preview must never break the report
                return f'<span class="muted" title="{html.escape(str(exn))}">no preview</span>'
    if "npy" in sample:
        try:
            array = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
        except Exception as exn:  # noqa: BLE001
            return f'<span class="muted" title="{html.escape(str(exn))}">no preview</span>'
        squeezed = np.squeeze(array)
        if squeezed.ndim == 1 or (squeezed.ndim == 2 and min(squeezed.shape) <= 4 and max(squeezed.shape) > 8):
            if squeezed.ndim == 2 and squeezed.shape[0] > squeezed.shape[1]:
                squeezed = squeezed.T
            return _svg_signal(squeezed.astype(np.float64))
        if squeezed.ndim in (2, 3):
            return _img_tag(_array_image(squeezed))
        return f'<span class="muted">array {array.shape}</span>'
    return '<span class="muted">no preview</span>'


def shard_label(sample: dict) -> int | None:
    """The integer label stored in a raw sample's ``cls`` member, if any."""
    for suffix in ("cls", "cls2", "label"):
        if suffix in sample:
            try:
                return int(sample[suffix].decode().strip())
            except (ValueError, UnicodeDecodeError, AttributeError):
                return None
    return None


# -- plots ----------------------------------------------------------------------------------
def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as exn:  # pragma: no cover - matplotlib is a declared extra
        raise ImportError("the curation report needs matplotlib: pip install 'curated-loader[demo]'") from exn
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Any, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#868e96", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_timeline(summary: dict, path: Path) -> bytes:
    rows = summary["timeline"]
    fig = _figure(9.0, 3.0)
    left, right = fig.subplots(1, 2)
    if not rows:
        _empty(left, "no epoch has ended yet")
        _empty(right, "no epoch has ended yet")
        return _save(fig, path)
    x = [r["epoch"] for r in rows]
    for name in ("kept", "flagged", "pruned"):
        left.plot(x, [r.get(name) or 0 for r in rows], marker="o", ms=3, color=COLORS[name], label=name)
    left.set(title="samples per decision", xlabel="end of epoch", ylabel="samples")
    top = max(max(r.get(name) or 0 for name in ("kept", "flagged", "pruned")) for r in rows)
    left.set_ylim(0, top * 1.25 or 1.0)
    left.legend(frameon=False, fontsize=8, ncols=3, loc="upper center")
    mean = np.array([r.get("weight_mean") or 0.0 for r in rows])
    std = np.array([r.get("weight_std") or 0.0 for r in rows])
    right.fill_between(x, mean - std, mean + std, color=COLORS["weight"], alpha=0.2, label="mean ± std")
    right.plot(x, mean, color=COLORS["weight"], marker="o", ms=3, label="mean")
    right.plot(x, [r.get("weight_max") or 0.0 for r in rows], color="#495057", ls="--", label="max")
    right.set(title="weight spread (kept samples)", xlabel="end of epoch", ylabel="loss weight")
    right.set_ylim(0, max(r.get("weight_max") or 0.0 for r in rows) * 1.25 or 1.0)
    right.legend(frameon=False, fontsize=8, ncols=3, loc="upper center")
    for ax in (left, right):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_distributions(state: CurationState, path: Path) -> bytes:
    stats, decision = state.stats(), state.decision_or_neutral()
    masks = outcome_masks(decision)
    fig = _figure(9.0, 3.0)
    axes = fig.subplots(1, 2)
    for ax, (values, valid, title) in zip(axes, (
        (stats.ema_loss, stats.seen, "EMA loss"),
        (stats.aum, stats.has_logits, "AUM (mean margin)"),
    )):
        v = values.double().numpy()
        ok = valid.numpy() & np.isfinite(v)
        if not ok.any():
            _empty(ax, f"no {title} recorded")
            continue
        bins = np.histogram_bin_edges(v[ok], bins=40)
        for name in ("kept", "pruned", "flagged"):
            sel = ok & masks[name].numpy()
            if sel.any():
                ax.hist(v[sel], bins=bins, histtype="stepfilled", alpha=0.35, color=COLORS[name], label=f"{name} ({int(sel.sum())})")
                ax.hist(v[sel], bins=bins, histtype="step", color=COLORS[name])
        ax.set(title=title, ylabel="samples")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
        ax.legend(frameon=False, fontsize=8, ncols=3, loc="upper center")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_classes(summary: dict, path: Path) -> bytes:
    rows = summary["per_class"]
    fig = _figure(9.0, 2.8)
    ax = fig.subplots()
    if not rows:
        _empty(ax, "no labels recorded")
        return _save(fig, path)
    labels = [str(r["label"]) if r["label"] >= 0 else "?" for r in rows]
    bottom = np.zeros(len(rows))
    for name in ("flagged", "pruned", "kept"):
        values = np.array([r[name] for r in rows], dtype=float)
        ax.bar(labels, values, bottom=bottom, color=COLORS[name], label=name, alpha=0.85)
        bottom += values
    ax.set(title="outcome per given label", xlabel="given label (from the ledger)", ylabel="samples")
    ax.legend(frameon=False, fontsize=8, ncols=3)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


# -- HTML -------------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#212529;margin:0;background:#f1f3f5}
main{max-width:1060px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 10px}
section{background:#fff;border-radius:8px;padding:18px 20px;margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.meta{color:#495057;font-size:13px}.muted{color:#868e96}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{flex:1 1 120px;border:1px solid #dee2e6;border-radius:6px;padding:8px 12px}
.card .n{display:block;font-size:22px;font-weight:600}.card .l{color:#495057;font-size:12px}
.card.kept .n{color:#2f9e44}.card.flagged .n{color:#e03131}.card.pruned .n{color:#f08c00}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e9ecef;vertical-align:middle}
th{background:#f8f9fa;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
img.plot{width:100%;height:auto;display:block;margin:6px 0 12px}
img.thumb{width:84px;height:auto;image-rendering:pixelated;border:1px solid #dee2e6}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.reason{display:inline-block;padding:1px 6px;border-radius:10px;font-size:12px;background:#e9ecef}
.reason.flagged{background:#ffe3e3;color:#c92a2a}.reason.pruned{background:#fff3bf;color:#e67700}
details{margin-top:6px}summary{cursor:pointer;color:#495057}
ul.filters{margin:6px 0 10px;padding-left:20px;font-size:13px}
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or isinstance(value, jinja2.Undefined):
        return DASH
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("curated_loader.reporting", "templates"),
                             autoescape=True, keep_trailing_newline=True)
    env.filters["fmt"] = _fmt
    env.filters["basename"] = lambda value: os.path.basename(str(value or ""))
    return env.get_template(TEMPLATE)


def render_html(summary: dict, plots: dict[str, bytes], previews: dict[int, str], shards_text: str) -> str:
    """The report page (``templates/report.html.j2``, autoescaped) from a summary, the plot
    PNGs and per-id preview HTML (fragments this module built; they are inserted as they are)."""
    return _template().render(
        s=summary, css=markupsafe.Markup(CSS), dash=DASH, shards_text=shards_text,
        checkpoint_name=os.path.basename(summary["checkpoint"]),
        plots={name: _png_data_uri(data) for name, data in plots.items()},
        previews={sid: markupsafe.Markup(fragment) for sid, fragment in previews.items()},
    )


def _shards_text(shards: Any) -> str:
    if isinstance(shards, ShardIndex):
        return f"{shards.num_shards} shards ({shards.urls[0]} …)" if shards.num_shards else "no shards"
    if isinstance(shards, (list, tuple)):
        return " ".join(os.fspath(s) for s in shards)
    return os.fspath(shards)


def write_report(
    checkpoint: str | os.PathLike,
    shards: ShardSpec | ShardIndex,
    out_dir: str | os.PathLike,
    *,
    top_k: int = 24,
    state_key: str | None = None,
    weights_only: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Write the curation report of ``checkpoint`` over the training ``shards`` into
    ``out_dir``; returns the path of ``report.html``.

    ``checkpoint`` is a Lightning checkpoint or the ``curation_state.pt`` the callback writes
    at fit end. Raises ``FileNotFoundError`` for a missing checkpoint and
    :class:`~curated_loader.reporting.checkpoint.CheckpointError` for a checkpoint without
    curation state or shards that are not the ones it was trained on (another count, order
    or content); the shards' index is cached in ``cache_dir`` (default: the user cache dir).
    """
    state, index = load_for_shards(checkpoint, shards, state_key=state_key, weights_only=weights_only,
                                   cache_dir=cache_folder() if cache_dir is None else cache_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(state, index, top_k=top_k)

    ids = [r["id"] for r in summary["top_suspicious"]]
    samples = read_samples(index, ids, progress=progress)
    previews: dict[int, str] = {}
    for row in summary["top_suspicious"]:
        sample = samples.get(row["id"], {"__error__": "not read"})
        row["key"] = sample.get("__key__")
        row["shard_label"] = shard_label(sample)
        if row["given"] is None:
            row["given"] = row["shard_label"]
        previews[row["id"]] = preview_html(sample)

    plots = {
        "timeline": plot_timeline(summary, out / "timeline.png"),
        "distributions": plot_distributions(state, out / "distributions.png"),
        "classes": plot_classes(summary, out / "classes.png"),
    }
    summary["files"] = {"html": "report.html", **{k: f"{k}.png" for k in plots}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    page = out / "report.html"
    page.write_text(render_html(summary, plots, previews, _shards_text(shards)), encoding="utf-8")
    return page
