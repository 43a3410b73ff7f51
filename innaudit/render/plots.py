"""Plots for the HTML report: matplotlib figures as inline SVG text, byte-for-byte reproducible.

One function per ``series`` kind of :class:`innaudit.core.results.SetResult`:

- ``error_histogram`` ``{"edges": [log10 edges], "counts": [...], "nonfinite": n}``: per-sample
  error on a log axis, with the count of non-finite samples as a red bar beside it;
- ``values`` ``{metric: [per-sample values]}``: distributions (singular values, forward and
  inverse), log axis when every value is positive;
- ``curve`` ``{"step": [...], metric: [...]}``: e.g. attack error against step;
- ``blocks`` ``{"name": [...], metric: [...]}``: a metric along the network, block by block;
- ``precisions`` ``{"name": [...], metric: [...]}``: a metric per floating-point precision
  (round-trip error against float64, float32, float16, bfloat16...);
- ``grid`` ``{"x": [...], "y": [...], metric: [[row], ...]}``: 2D maps (log colour scale, NaN and
  Inf masked and drawn black), the paper's checkerboard figure;
- ``images`` ``{label: image}``: witness images (x, x', reconstruction), grey or RGB;
- ``tokens`` ``{"block": [names], metric: [[per-token value] per block]}``: block x token heat
  maps of an autoregressive flow (tokens in each block's own order), log colour scale, NaN and
  Inf drawn black.

Determinism: the Agg backend, ``svg.hashsalt`` set per figure (so ids differ between figures but
not between runs), text kept as text (``svg.fonttype = none``), and no date in the metadata.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["KINDS", "plot_series"]

_INK, _BAD, _FAINT = "#1f5f99", "#c0392b", "#8899aa"


def _figure(width: float = 4.2, height: float = 2.4) -> Any:
    # a bare Figure (not pyplot) draws through its own canvas: no backend is switched, so a
    # notebook's backend stays as the user set it
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _svg(fig: Any, salt: str) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = re.sub(r"^<\?xml[^>]*>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    # ids such as "patch_1" repeat in every figure: prefix them so one page has unique ids
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", salt)
    text = re.sub(r'id="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", text)
    text = re.sub(r'xlink:href="#([^"]+)"', lambda m: f'xlink:href="#{prefix}-{m.group(1)}"', text)
    return text.strip() + "\n"


def _finite(values: Sequence[Any]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def _metric_keys(series: Mapping[str, Any], axis: str) -> list[str]:
    return [k for k, v in series.items() if k != axis and isinstance(v, (list, tuple))]


def _log_axis(ax: Any, which: str = "y") -> None:
    """A log axis labelled in plain text (``1e-07``): matplotlib's default log labels are TeX,
    whose parser costs more than the rest of the figure."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _log_if_positive(ax: Any, values: Sequence[float], which: str = "y") -> None:
    if values and min(values) > 0:
        _log_axis(ax, which)


def error_histogram(series: Mapping[str, Any], title: str) -> Any:
    """Per-sample error histogram on a log axis, non-finite samples as a red bar beside it."""
    edges, counts = list(series.get("edges", [])), list(series.get("counts", []))
    nonfinite = int(series.get("nonfinite", 0) or 0)
    fig = _figure()
    main, side = fig.subplots(1, 2, gridspec_kw={"width_ratios": [7, 1]})
    if counts and len(edges) == len(counts) + 1 and sum(counts) > 0:
        main.stairs(counts, [10.0**e for e in edges], fill=True, color=_INK)
        _log_axis(main, "x")
    else:
        main.text(0.5, 0.5, "no finite sample", ha="center", va="center", transform=main.transAxes)
    main.set_xlabel("per-sample L2 error")
    main.set_ylabel("samples")
    main.set_title(title, loc="left", parse_math=False)
    side.bar([0], [nonfinite], color=_BAD, width=0.8)
    side.set_xticks([0], ["NaN/Inf"])
    side.set_title(f"{nonfinite}", color=_BAD if nonfinite else _FAINT, fontsize=9)
    side.set_ylim(0, max(1, nonfinite) * 1.05)
    side.tick_params(axis="y", labelsize=6)
    return fig


def values(series: Mapping[str, Any], title: str) -> Any:
    """Distributions of per-sample values (e.g. singular values forward and inverse)."""
    fig = _figure()
    ax = fig.subplots()
    drawn = 0
    for key in _metric_keys(series, ""):
        data = _finite(series[key])
        if not data:
            continue
        positive = min(data) > 0
        points = [math.log10(v) for v in data] if positive else data
        ax.hist(points, bins=30, histtype="step", linewidth=1.4, label=(f"log10 {key}" if positive else key))
        drawn += 1
    if drawn:
        ax.legend(fontsize=7)
    ax.set_ylabel("samples")
    ax.set_title(title, loc="left", parse_math=False)
    return fig


def _lines(
    ax: Any, series: Mapping[str, Any], axis: str, xs: Callable[[int], Sequence[Any]], marker: str
) -> list[float]:
    """One line per metric of ``series`` (all keys but ``axis``) at ``xs(len(values))``;
    non-numbers are drawn as gaps. Returns every finite value drawn."""
    every: list[float] = []
    for key in _metric_keys(series, axis):
        ys = [float(v) if isinstance(v, (int, float)) else math.nan for v in series[key]]
        ax.plot(xs(len(ys)), ys, marker=marker, label=key)
        every += _finite(ys)
    return every


def _finish_lines(ax: Any, every: Sequence[float], xlabel: str, title: str) -> None:
    """Log y-scale when every value is positive, the x label, legend and title."""
    _log_if_positive(ax, every)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7)
    ax.set_title(title, loc="left", parse_math=False)


def curve(series: Mapping[str, Any], title: str) -> Any:
    """Metrics against step (attack error as the attack runs)."""
    fig = _figure()
    ax = fig.subplots()
    steps = list(series.get("step", []))
    every = _lines(ax, series, "step", lambda n: steps[:n] or range(n), ".")
    _finish_lines(ax, every, "step", title)
    return fig


def _named_points(series: Mapping[str, Any], title: str, spacing: float, rotation: int, xlabel: str) -> Any:
    """Metrics at named points (``series["name"]``), one marker per name, names along x."""
    names = [str(n) for n in series.get("name", [])]
    fig = _figure(max(4.2, spacing * len(names) + 1.5), 2.6)
    ax = fig.subplots()
    every = _lines(ax, series, "name", range, "o")
    ax.set_xticks(range(len(names)), names, rotation=rotation, ha="right", fontsize=6, parse_math=False)
    _finish_lines(ax, every, xlabel, title)
    return fig


def _shares(series: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """The keys that hold shares in [0, 1] (``*_fraction``), drawn apart from magnitudes."""
    return [k for k in keys if k.endswith("fraction")]


def blocks(series: Mapping[str, Any], title: str) -> Any:
    """Metrics along the network, one point per block: magnitudes (errors, singular values,
    conditions, scales: 1e-7 next to 1e8) on a log axis, where a non-positive value is a gap and
    an infinite one a red cross on the top edge; shares (non-finite) as bars below on [0, 1];
    the legend outside the axes, beside them."""
    names = [str(n) for n in series.get("name", [])]
    keys = _metric_keys(series, "name")
    shares = _shares(series, keys)
    fig = _figure(max(6.0, 0.28 * len(names) + 3.2), 4.8)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    every: list[float] = []
    infinite: dict[str, tuple[list[int], str]] = {}
    for key in (k for k in keys if k not in shares):
        ys = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan for v in series[key]]
        shown = [v if math.isfinite(v) and v > 0 else math.nan for v in ys]
        (line,) = top.plot(range(len(shown)), shown, marker="o", markersize=3, label=key)
        if math.inf in ys:
            infinite[key] = ([i for i, v in enumerate(ys) if v == math.inf], line.get_color())
        every += _finite(shown)
    ceiling = max(every) * 10 if every else 1.0
    for key, (where, colour) in infinite.items():
        top.plot(where, [ceiling] * len(where), "x", color=colour, label=f"{key} = inf")
    if every:
        _log_axis(top)
    top.set_ylabel("value (log)")
    top.set_title(title, loc="left", parse_math=False)
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    for offset, key in enumerate(shares):
        ys = [float(v) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0 for v in series[key]]
        width = 0.8 / max(1, len(shares))
        bottom.bar([i + offset * width for i in range(len(ys))], ys, width=width, color=_BAD, label=key)
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("share")
    if shares:
        bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    bottom.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=6, parse_math=False)
    bottom.set_xlabel("block")
    return fig


def precisions(series: Mapping[str, Any], title: str) -> Any:
    """Metrics per precision (measured and predicted round-trip error), one point per precision."""
    return _named_points(series, title, 0.6, 30, "precision")


def grid(series: Mapping[str, Any], title: str) -> Any:
    """2D maps of each metric, log colour scale, NaN/Inf masked (drawn black)."""
    from matplotlib.colors import LogNorm, Normalize

    xs, ys = np.asarray(series.get("x", []), float), np.asarray(series.get("y", []), float)
    keys = [k for k in series if k not in ("x", "y")]
    for key in keys:
        shape = np.shape(series[key]) if isinstance(series[key], list | tuple) else ()
        if shape != (ys.size, xs.size):
            raise ValueError(f"grid metric {key!r} is not a {ys.size} x {xs.size} array (len(y) x len(x))")
    if not keys:
        raise ValueError("grid series has no metric besides x and y")
    fig = _figure(3.4 * len(keys), 3.0)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=False):
        data = np.ma.masked_invalid(np.asarray(series[key], dtype=float))
        good = data.compressed()
        positive = good.size > 0 and good.min() > 0
        norm = LogNorm(good.min(), max(good.max(), good.min() * 1.0001)) if positive else Normalize()
        cmap = __import__("matplotlib").colormaps["viridis"].with_extremes(bad="black")
        extent = None
        if xs.size and ys.size:
            extent = (float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max()))
        image = ax.imshow(
            data, origin="lower", extent=extent, norm=norm, cmap=cmap, aspect="auto", interpolation="nearest"
        )
        fig.colorbar(image, ax=ax, shrink=0.85)
        masked = int(np.ma.count_masked(data))
        ax.set_title(f"{key}" + (f" ({masked} NaN/Inf, black)" if masked else ""), fontsize=8, parse_math=False)
    fig.suptitle(title, x=0.02, ha="left", fontsize=9, parse_math=False)
    return fig


def _image(raw: Any) -> Any:
    arr = np.asarray(raw, dtype=float)
    while arr.ndim > 3 or (arr.ndim == 3 and arr.shape[0] == 1):
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return arr


def images(series: Mapping[str, Any], title: str) -> Any:
    """Witness images side by side (x, x', reconstruction...), each on its own colour range."""

    labels = list(series)
    fig = _figure(1.6 * max(1, len(labels)) + 0.4, 2.0)
    axes = fig.subplots(1, max(1, len(labels)), squeeze=False)[0]
    for ax, label in zip(axes, labels, strict=False):
        arr = _image(series[label])
        bad = ~np.isfinite(arr)
        shown = np.where(bad, np.nan, arr)
        if arr.ndim == 3:
            finite = shown[np.isfinite(shown)]
            lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
            shown = np.nan_to_num((shown - lo) / max(hi - lo, 1e-12), nan=0.0).clip(0, 1)
            ax.imshow(shown, interpolation="nearest")
        else:
            cmap = __import__("matplotlib").colormaps["gray"].with_extremes(bad="red")
            ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, interpolation="nearest")
        ax.set_title(str(label) + (" (NaN/Inf red)" if bad.any() else ""), fontsize=7, parse_math=False)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, x=0.02, ha="left", fontsize=9, parse_math=False)
    return fig


def tokens(series: Mapping[str, Any], title: str) -> Any:
    """Block x token heat maps, one panel per metric: a row per block, a column per token step."""
    from matplotlib.colors import LogNorm, Normalize

    names = [str(n) for n in series.get("block", [])]
    keys = _metric_keys(series, "block")
    fig = _figure(3.6 * max(1, len(keys)), 0.9 + 0.28 * max(1, len(names)))
    axes = fig.subplots(1, max(1, len(keys)), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=False):
        data = np.ma.masked_invalid(np.asarray(series[key], dtype=float).reshape(len(names), -1))
        good = data.compressed()
        positive = good.size > 0 and good.min() > 0
        norm = LogNorm(good.min(), max(good.max(), good.min() * 1.0001)) if positive else Normalize()
        cmap = __import__("matplotlib").colormaps["magma"].with_extremes(bad="black")
        image = ax.imshow(data, norm=norm, cmap=cmap, aspect="auto", interpolation="nearest")
        fig.colorbar(image, ax=ax, shrink=0.85)
        ax.set_yticks(range(len(names)), names, fontsize=6, parse_math=False)
        ax.set_xlabel("token (block order)")
        masked = int(np.ma.count_masked(data))
        ax.set_title(f"{key}" + (f" ({masked} NaN/Inf, black)" if masked else ""), fontsize=8, parse_math=False)
    fig.suptitle(title, x=0.02, ha="left", fontsize=9, parse_math=False)
    return fig


KINDS: dict[str, Callable[[Mapping[str, Any], str], Any]] = {
    "error_histogram": error_histogram,
    "values": values,
    "curve": curve,
    "blocks": blocks,
    "precisions": precisions,
    "grid": grid,
    "images": images,
    "tokens": tokens,
}
"""Series kind -> figure builder, in the order the HTML shows them."""


def plot_series(kind: str, series: Any, title: str, salt: str) -> str:
    """The SVG text of one series (raises ValueError for data it cannot draw)."""
    if kind not in KINDS or not isinstance(series, Mapping):
        raise ValueError(f"no plot for series {kind!r}")
    import matplotlib

    # text stays text (no glyph paths); titles and labels (set names) are drawn with
    # parse_math=False, so a "$" in a name is not read as TeX
    with matplotlib.rc_context(
        {"svg.fonttype": "none", "font.family": "sans-serif", "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8}
    ):
        fig = KINDS[kind](series, title)
        return _svg(fig, salt)
