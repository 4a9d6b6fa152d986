"""The benchmark's PNG plots, laid out to be read on a run of twenty rows or more.

Each plot has a builder that takes the results.json dict and returns a matplotlib Figure (None
when no row holds its data), so tests and notebooks can inspect the figure itself; `plot_all`
writes them. The data axes are sized in inches and the figure grows around them, so keys,
legends and colour bars sit beside the data, never over it, and labels placed in pixels stay
where they were measured.
"""

import math
import os

import numpy as np

from mmkeras.bench.metrics import ROBUSTNESS_TITLES

try:
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import MaxNLocator, NullFormatter
except ImportError:  # an optional dependency (the notebooks extra): plot_all says so and skips
    Figure = None

DPI = 100
FONT = 8  # labels, keys and cell numbers
FAMILIES = ("image", "text", "fused", "ensemble")
FAMILY_COLOURS = {"image": "tab:blue", "text": "tab:orange", "fused": "tab:green", "ensemble": "tab:red"}
FAMILY_COLOURMAPS = {"image": "Blues", "text": "Oranges", "fused": "Greens", "ensemble": "Reds"}
CELL_FORMAT = "{:.3f}"  # robustness cells, as in results.md
MARKERS = "osD^vP*Xph"
LINESTYLES = ("-", "--", "-.", ":")
MARKER_SIZE = 6  # points (diameter) in the accuracy scatter
MARKER_RADIUS = MARKER_SIZE / 2 * DPI / 72 + 1  # pixels, with the white edge
OVERLAP = 1.5 * MARKER_RADIUS  # pixels between centres below which two markers read as one


def plot_all(results, out_dir):
    """Write accuracy_vs_params.png, robustness.png, confusion_matrix.png and
    training_curves.png for a results.json dict; returns the paths written (a plot whose data
    no row holds is skipped)."""
    if Figure is None:
        print("matplotlib not installed: skipping plots (pip install mmkeras[notebooks])")
        return []
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for filename, build in PLOTS.items():
        fig = build(results)
        if fig is not None:
            paths.append(os.path.join(out_dir, filename))
            fig.savefig(paths[-1], dpi=DPI)
    return paths


def accuracy_vs_params_figure(results):
    """Test accuracy against parameter count: numbered points (1 = best) and a key beside the
    plot. When three or more markers overlap (the top fused rows usually do), a second panel
    magnifies them and the main plot marks that region with a dashed box."""
    rows = sorted((m for m in results["models"] if m.get("params") and m.get("test_accuracy") is not None),
                  key=lambda m: -m["test_accuracy"])
    if not rows:
        return None
    x = np.array([m["params"] for m in rows], float)
    y = np.array([m["test_accuracy"] for m in rows], float)
    colours = [FAMILY_COLOURS.get(m["family"], "grey") for m in rows]
    numbers = [str(i) for i in range(1, len(rows) + 1)]
    fig, ax = _figure(width=6.5, height=max(4.5, 0.25 * len(rows) + 1.0))
    _scatter(ax, x, y, colours)
    ax.set_xscale("log")
    ax.set_xlim(x.min() / 2, x.max() * 2)
    span = max(float(y.max() - y.min()), 0.05)
    ax.set_ylim(y.min() - 0.12 * span, y.max() + 0.12 * span)
    _log_ticks(ax, _count_label)
    ax.set(xlabel="parameters (log scale)", ylabel="test accuracy",
           title=f"Accuracy against size: {results.get('dataset', '')}")
    crowd = max(_overlapping(ax.transData.transform(np.column_stack([x, y])), OVERLAP), key=len)
    beside = ax
    if len(crowd) >= 3 and len({(x[i], y[i]) for i in crowd}) > 1:  # magnifying can tell them apart
        inside, (x0, y0, x1, y1) = _crowd_box(ax, x, y, crowd)
        box = Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--", edgecolor="0.35", zorder=2)
        ax.add_patch(box)
        beside = _axes_beside(ax, width=3.5)
        _scatter(beside, x, y, colours)
        beside.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="parameters", title="The dashed box, magnified")
        # A short range: a linear axis reads the same as log, and takes nice round ticks.
        ticks = [v for v in MaxNLocator(4).tick_values(x0, x1) if x0 <= v <= x1]
        beside.set_xticks(ticks, _count_labels(ticks))
        beside.tick_params(labelsize=FONT + 1)
        _place_labels(beside, x, y, [n if i else None for n, i in zip(numbers, inside)])
        _place_labels(ax, x, y, [None if i else n for n, i in zip(numbers, inside)],
                      avoid=[box.get_window_extent().extents])
    else:
        _place_labels(ax, x, y, numbers)
    key = beside.legend([_dot(c) for c in colours],
                        [f"{i}  {m['name']}  {m['test_accuracy']:.3f}  ({_count_label(m['params'])})"
                         for i, m in enumerate(rows, 1)],
                        title="#  model  test accuracy  (parameters)", loc="upper left",
                        bbox_to_anchor=(1.02, 1), fontsize=FONT, title_fontsize=FONT, alignment="left",
                        handletextpad=0.3, frameon=False)
    beside.add_artist(key)  # the family legend below would replace it otherwise
    key.set_clip_on(False)  # add_artist clips to the axes, and _fit would cut the key off
    bottom = beside.transAxes.inverted().transform(key.get_window_extent(fig.canvas.get_renderer()))[0][1]
    families = _families(rows)
    beside.legend([_dot(FAMILY_COLOURS.get(f, "grey")) for f in families], families, title="family",
                  loc="upper left", bbox_to_anchor=(1.02, bottom - 0.02), fontsize=FONT, title_fontsize=FONT,
                  alignment="left", frameon=False)
    return _fit(fig)


def robustness_figure(results):
    """Models x conditions heatmap of test accuracy, best clean accuracy first."""
    rows = sorted(results["models"], key=lambda m: -m["test_accuracy"])
    conditions = list(dict.fromkeys(k for m in rows for k in (m.get("robustness") or {})))
    if not conditions:
        return None
    keys = ["clean"] + conditions
    values = np.array([[m["test_accuracy"] if k == "clean" else (m.get("robustness") or {}).get(k, np.nan)
                        for k in keys] for m in rows], float)
    fig, ax = _figure(width=0.85 * len(keys), height=max(0.3 * len(rows), 1.2))
    cmap = colormaps["viridis"].with_extremes(bad="0.85")  # grey: a row that did not measure it
    finite = values[np.isfinite(values)]
    low, high = float(finite.min()), float(finite.max())
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=low, vmax=max(high, low + 0.01),
                   aspect="auto")
    _cell_texts(ax, im, values,
                [[CELL_FORMAT.format(v) if np.isfinite(v) else "n/a" for v in row] for row in values])
    ax.xaxis.tick_top()
    titles = ["clean"] + [ROBUSTNESS_TITLES.get(k, k.replace("_", " ")).replace(" ", "\n", 1)
                          for k in conditions]
    ax.set_xticks(range(len(keys)), titles, fontsize=FONT)
    ax.set_yticks(range(len(rows)), [m["name"] for m in rows], fontsize=FONT)
    for label, m in zip(ax.get_yticklabels(), rows):
        label.set_color(FAMILY_COLOURS.get(m["family"], "grey"))
    ax.tick_params(length=0)
    samples, n_test = results.get("robustness_samples"), results.get("n_test")
    note = (f" ({samples} test samples)" if samples == n_test else
            f"\n(clean: all {n_test} test samples; the others: a seeded subset of {samples})" if samples
            else "")
    ax.set_title("Test accuracy under each condition" + note, fontsize=10)
    _colour_bar(ax, im, "test accuracy")
    families = _families(rows)
    ax.legend([Patch(color=FAMILY_COLOURS.get(f, "grey")) for f in families], families,
              title="model name colour: family",
              loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=4, fontsize=FONT, title_fontsize=FONT,
              frameon=False)
    return _fit(fig)


def training_curves_figure(results):
    """Test accuracy after each epoch against training seconds (log: warm-started rows train for
    seconds, others for many minutes); each row a shade of its family's colour map."""
    rows = [m for m in results["models"] if _curve(m)]
    if not rows:
        return None
    fig, ax = _figure(width=7.0, height=max(4.5, 0.25 * len(rows) + 1.0))
    seconds = []
    for family in _families(rows):
        members = sorted((m for m in rows if m["family"] == family), key=lambda m: -_curve(m)[-1][1])
        cmap = colormaps[FAMILY_COLOURMAPS.get(family, "Greys")]
        shades = cmap(np.linspace(0.95, 0.4, len(members))) if len(members) > 1 else [cmap(0.75)]
        for i, (m, shade) in enumerate(zip(members, shades)):
            t, acc = zip(*_curve(m))
            seconds += t
            ax.plot(t, acc, color=shade, marker=MARKERS[i % len(MARKERS)], markersize=5, linewidth=1.4,
                    linestyle=LINESTYLES[i // len(MARKERS) % len(LINESTYLES)],
                    label=f"{m['name']} ({family})")
    ax.set_xscale("log")
    ax.set_xlim(min(seconds) / 1.5, max(seconds) * 1.5)
    _log_ticks(ax, "{:g}".format)
    ax.grid(alpha=0.3)
    ax.set(xlabel="training seconds (log scale)", ylabel="test accuracy after each epoch",
           title="Training curves")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=FONT, title="by family, best first",
              title_fontsize=FONT, alignment="left", frameon=False)
    return _fit(fig)


def confusion_matrix_figure(results):
    """The best row's confusion matrix, each true class normalised to 1."""
    rows = [m for m in results["models"] if m.get("confusion_matrix")]
    if not rows:
        return None
    best = max(rows, key=lambda m: m["test_accuracy"])
    counts = np.asarray(best["confusion_matrix"], float)
    n = len(counts)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    cell = 0.75 if n <= 10 else 0.45 if n <= 20 else max(9.0 / n, 0.06)  # inches
    fig, ax = _figure(width=cell * n, height=cell * n)
    im = ax.imshow(np.ma.masked_invalid(share), cmap=colormaps["Blues"].with_extremes(bad="0.85"),
                   vmin=0, vmax=1)
    if n <= 20:  # numbers only where a cell is wide enough to hold them; empty cells stay blank
        texts = [["" if not c else f"{s:.0%}\n{int(c)}" if n <= 10 else f"{s:.0%}" for s, c in zip(sr, cr)]
                 for sr, cr in zip(share, counts)]
        _cell_texts(ax, im, share, texts, fontsize=FONT if n <= 10 else 7)
    names = results.get("class_names") or []
    if n <= 20 and len(names) == n:
        ax.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=FONT)
        ax.set_yticks(range(n), names, fontsize=FONT)
    ax.set(xlabel="predicted class", ylabel="true class")
    shown = "share of each true class" + (" (count below)" if n <= 10 else "")
    ax.set_title(f"Confusion matrix: {best['name']} (test accuracy {best['test_accuracy']:.3f})\n{shown}",
                 fontsize=10)
    _colour_bar(ax, im, "share of the true class")
    return _fit(fig)


PLOTS = {"accuracy_vs_params.png": accuracy_vs_params_figure, "robustness.png": robustness_figure,
         "confusion_matrix.png": confusion_matrix_figure, "training_curves.png": training_curves_figure}


def _figure(*, width, height):
    """A figure holding one axes of width x height inches; `_fit` later sizes the figure around it."""
    fig = Figure(dpi=DPI)
    FigureCanvasAgg(fig)  # Agg without pyplot: no global figure list, no backend switch
    fig.set_size_inches(width + 2, height + 2)
    return fig, fig.add_axes((1 / (width + 2), 1 / (height + 2), width / (width + 2), height / (height + 2)))


def _colour_bar(ax, im, label):
    """A colour bar 0.15 inches wide, 0.15 inches right of the heatmap `ax`."""
    width = ax.get_position().width * ax.figure.get_size_inches()[0]
    bar = ax.figure.colorbar(im, cax=ax.inset_axes((1.0 + 0.15 / width, 0, 0.15 / width, 1)))
    bar.set_label(label, fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT)


def _scatter(ax, x, y, colours):
    ax.scatter(x, y, s=MARKER_SIZE ** 2, c=colours, edgecolors="white", linewidths=0.6, zorder=3)
    ax.grid(alpha=0.3)


def _crowd_box(ax, x, y, crowd):
    """(which points are inside, (x0, y0, x1, y1) in data units) of a box around the points
    `crowd` with a margin, so its edge shows beyond their markers, grown until no marker it
    reaches is cut by its edge."""
    points, inside = ax.transData.transform(np.column_stack([x, y])), np.isin(np.arange(len(x)), crowd)
    margin = MARKER_RADIUS + 5
    while True:
        low, high = points[inside].min(axis=0) - margin, points[inside].max(axis=0) + margin
        reached = np.all((points > low - MARKER_RADIUS) & (points < high + MARKER_RADIUS), axis=1) | inside
        if (reached == inside).all():
            break
        inside = reached
    (x0, y0), (x1, y1) = ax.transData.inverted().transform([low, high])
    return inside, (x0, y0, x1, y1)


def _axes_beside(ax, *, width, gap=0.9):
    """A second axes `width` inches wide, as tall as `ax`, `gap` inches to its right."""
    fig = ax.figure
    (w, h), pos = fig.get_size_inches(), ax.get_position()
    return fig.add_axes((pos.x1 + gap / w, pos.y0, width / w, pos.height))


def _fit(fig, pad=0.15):
    """Resize the figure to hold everything drawn, keeping every axes at its size in inches.
    (tight_layout would shrink the axes instead, moving points under labels placed in pixels.)"""
    box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
    w, h = fig.get_size_inches()
    width, height = box.width + 2 * pad, box.height + 2 * pad
    fig.set_size_inches(width, height)
    for ax in fig.axes:  # insets (colour bars) follow their parent
        pos = ax.get_position()
        ax.set_position(((pos.x0 * w - box.x0 + pad) / width, (pos.y0 * h - box.y0 + pad) / height,
                         pos.width * w / width, pos.height * h / height))
    return fig


def _log_ticks(ax, label):
    """Label the x axis's ticks at 1..9, else 1-2-3-5, 1-2-5 or 1-3 times the powers of ten: the
    densest set whose labels all fit with a character's gap (matplotlib labels every minor tick
    of a short log range, and they print over each other); failing all, the powers of ten that fit."""
    low, high = ax.get_xlim()
    renderer = ax.figure.canvas.get_renderer()
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)

    def spans(values):
        for value in values:
            width = _text_size(ax, label(value), renderer, fontsize=FONT + 1)[0]
            centre = ax.transData.transform((value, 1))[0]
            yield value, (centre - width / 2 - FONT / 2, centre + width / 2 + FONT / 2)  # a character apart

    for subs in ((1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 5), (1, 2, 5), (1, 3), (1,)):
        values = [v for v in (m * 10.0 ** e if e >= 0 else m / 10 ** -e for e in decades for m in subs)
                  if low <= v <= high]
        placed = list(spans(values))
        if values and all(a[1] < b[0] for (_, a), (_, b) in zip(placed, placed[1:])):
            break
    else:  # many decades on a narrow axis: keep each power of ten that clears the last one kept
        kept = []
        for value, span in placed:
            if not kept or kept[-1][1][1] < span[0]:
                kept.append((value, span))
        values = [v for v, _ in kept]
    ax.set_xticks(values, [label(v) for v in values], fontsize=FONT + 1)
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor ticks stay, unlabelled


def _place_labels(ax, x, y, labels, avoid=()):
    """Number the points: labels[i] beside point i at the nearest spot (on rings of growing
    distance) where it touches no other label or marker and stays inside the axes, with a leader
    line once it had to move away. Points whose markers overlap share one label ("11,14"): no
    placement could tell them apart. Offsets are in pixels, so the axes must keep its size
    afterwards (`_fit` does)."""
    renderer = ax.figure.canvas.get_renderer()
    points = ax.transData.transform(np.column_stack([x, y]))
    frame = ax.get_window_extent(renderer)
    radius = MARKER_RADIUS
    taken = [(px - radius, py - radius, px + radius, py + radius) for px, py in points] + list(avoid)
    # Beside, then diagonal, then above and below; then the directions in between.
    angles = np.deg2rad([0, 180, 45, 135, 315, 225, 90, 270,
                         22.5, 157.5, 337.5, 202.5, 67.5, 112.5, 292.5, 247.5])
    for group in _overlapping(points, OVERLAP):
        group = [i for i in group if labels[i] is not None]
        if not group:
            continue
        text = ",".join(labels[i] for i in group)
        w, h = _text_size(ax, text, renderer, fontsize=FONT)
        (x0, y0), (x1, y1) = points[group].min(axis=0) - radius, points[group].max(axis=0) + radius
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        choice = None
        for gap in (1, 4, 8, 14, 22, 32, 45, 60, 80, 105, 135, 170):
            for a in angles:
                bx = cx + math.cos(a) * ((x1 - x0) / 2 + gap + w / 2)
                by = cy + math.sin(a) * ((y1 - y0) / 2 + gap + h / 2)
                box = (bx - w / 2, by - h / 2, bx + w / 2, by + h / 2)
                inside = (frame.x0 <= box[0] and box[2] <= frame.x1
                          and frame.y0 <= box[1] and box[3] <= frame.y1)
                if inside and not any(_overlap(box, t) for t in taken):
                    choice = (bx, by, gap, box)
                    break
            if choice:
                break
        if choice is None:  # nowhere free (hundreds of rows): on the points; the key still lists them
            choice = (cx, cy, 0, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        bx, by, gap, box = choice
        taken.append(box)
        anchor = group[0]
        leader = (dict(arrowstyle="-", color="0.3", linewidth=0.7, shrinkA=0, shrinkB=radius)
                  if gap > 4 else None)
        ax.annotate(text, (x[anchor], y[anchor]), xytext=(bx - points[anchor][0], by - points[anchor][1]),
                    textcoords="offset pixels", ha="center", va="center", fontsize=FONT, arrowprops=leader,
                    zorder=4)


def _overlapping(points, distance):
    """Groups of point indices (each sorted, groups in order of their first index) chained by
    pixel distances under `distance`."""
    group = list(range(len(points)))

    def root(i):
        while group[i] != i:
            i = group[i]
        return i

    for i in range(len(points)):
        for j in range(i):
            if np.hypot(*(points[i] - points[j])) < distance:
                group[root(i)] = root(j)
    members = {}
    for i in range(len(points)):
        members.setdefault(root(i), []).append(i)
    return sorted(members.values())


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _text_size(ax, text, renderer, *, fontsize):
    """(width, height) in pixels of `text` as the axes would draw it."""
    probe = ax.text(0, 0, text, fontsize=fontsize)
    box = probe.get_window_extent(renderer)
    probe.remove()
    return box.width, box.height


def _cell_texts(ax, im, values, texts, fontsize=FONT):
    """Write texts[i][j] in heatmap cell (i, j), white on dark cells and black on light ones."""
    for i, row in enumerate(texts):
        for j, text in enumerate(row):
            rgb = im.cmap(im.norm(values[i][j]))[:3] if np.isfinite(values[i][j]) else (0.85,) * 3
            ink = "white" if 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2] < 0.5 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=ink)


def _families(rows):
    """The families of `rows`, known ones in FAMILIES order, then any others."""
    present = {m["family"] for m in rows}
    return [f for f in FAMILIES if f in present] + sorted(present - set(FAMILIES))


def _dot(colour):
    return Line2D([], [], linestyle="", marker="o", markersize=MARKER_SIZE, color=colour)


def _curve(m):
    """[(seconds, test accuracy)] of a row's per-epoch curve (points a log axis can show)."""
    return [(c["seconds"], c["test_accuracy"]) for c in m.get("curve") or []
            if c.get("seconds") and c["seconds"] > 0 and c.get("test_accuracy") is not None]


def _count_label(value):
    """12345 -> '12.3k', 2e6 -> '2M'."""
    divisor, suffix = _unit(value)
    return f"{value / divisor:.3g}{suffix}"


def _count_labels(values):
    """Labels for round tick values, each with the fewest decimals that print it exactly
    (three significant digits would print 1,005,000 as '1M' next to a tick at 1M)."""
    labels = []
    for value in values:
        divisor, suffix = _unit(value)
        digits = next((d for d in range(5) if abs(round(value / divisor, d) - value / divisor) < 1e-9), 5)
        labels.append(f"{value / divisor:.{digits}f}{suffix}")
    return labels


def _unit(value):
    return next(((d, s) for d, s in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if value >= d), (1, ""))
