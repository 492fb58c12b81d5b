"""The pictures of ``nasps report``: PNG plots of a run and diagrams of its best architectures.

Everything here reads plain rows (``ChildRow``, the store's rounds) and writes files; nothing
reads the store itself. The figures are ``matplotlib.figure.Figure`` objects made without pyplot,
so drawing them neither needs a display (a cluster's head node) nor changes the backend of the
process that asks for them (a notebook's inline plots).
"""

from __future__ import annotations

import io
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as MplPath

from nasps.evaluators import SCORED
from nasps.spaces import shape_of
from nasps.spaces.rnn_cell import cell_equations, node_inputs
from nasps.state.store import ChildRow, ranked_children
from nasps.views.report import TOP_KS

DPI = 150
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
         "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
         "grid.alpha": 0.3, "figure.dpi": DPI}


@dataclass(frozen=True)
class RunData:
    """What the plots need of one run directory."""

    label: str
    rows: list[ChildRow]
    rounds: list[tuple]  # the store's rounds: (replica, seq, baseline, entropy, mean_reward, ...)
    metric: Optional["MetricScale"] = None  # the reward as the validation metric it is made of

    @property
    def trained(self) -> list[ChildRow]:
        return [r for r in self.rows if not r.cached]


@dataclass(frozen=True)
class MetricScale:
    """A built-in evaluator's reward read as the metric people know, for a second axis."""

    label: str
    from_reward: Callable[[Any], Any]
    to_reward: Callable[[Any], Any]


def metric_scale(evaluator: Mapping[str, Any]) -> Optional[MetricScale]:
    """The validation metric the reward of an evaluator section is a function of (None for a
    python evaluator, whose reward is its own)."""
    import numpy as np
    kind = evaluator.get("type")
    if kind == "image_classification":
        power = 3 if evaluator.get("reward", "accuracy_cubed_last5") == "accuracy_cubed_last5" else 1
        return MetricScale("validation accuracy (%)", lambda r: 100 * np.clip(r, 0, None) ** (1 / power),
                           lambda a: (np.clip(a, 0, None) / 100) ** power)
    if kind == "language_model":
        c = float(evaluator.get("reward_constant", 80.0))
        return MetricScale("validation perplexity", lambda r: np.sqrt(c / np.clip(r, 1e-300, None)),
                           lambda p: c / np.clip(p, 1e-150, None) ** 2)
    return None


def _metric_axis(ax, metric: Optional[MetricScale]) -> None:
    if metric is not None:
        ax.secondary_yaxis("right", functions=(metric.from_reward, metric.to_reward)).set_ylabel(metric.label)


def top_k_curve(rows: Sequence[ChildRow], k: int) -> tuple[list[int], list[float]]:
    """Mean reward of the k best children among the first n trained, for every n where there
    are k scored children (the y of the paper's control figure against x = n)."""
    xs, ys, scored = [], [], []
    for n, r in enumerate((r for r in rows if not r.cached), 1):
        if r.status in SCORED and r.reward is not None:
            scored.append(r.reward)
            scored.sort(reverse=True)
            del scored[k:]
        if len(scored) == k:
            xs.append(n)
            ys.append(statistics.fmean(scored))
    return xs, ys


def moving_average(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def figures(run: RunData, compare: Sequence[RunData] = (), top: int = 3) -> dict[str, Figure]:
    """Every plot that has data for this run, by name (``rewards``, ``control``, ...,
    ``architecture_1``)."""
    drawn = {}
    with matplotlib.rc_context(STYLE):
        for name, draw in (("rewards", lambda: _rewards(run)),
                           ("control", lambda: _control([run, *compare])),
                           ("depth", lambda: _depth(run)),
                           ("staleness", lambda: _staleness(run)),
                           ("throughput", lambda: _throughput(run)),
                           ("controller", lambda: _controller(run))):
            drawn[name] = draw()
        for rank, row in enumerate(ranked_children(run.rows)[:top], 1):
            drawn[f"architecture_{rank}"] = architecture_figure(
                row.arch, f"rank {rank}: child {row.id}, reward {row.reward:.4g}")
    return {name: figure for name, figure in drawn.items() if figure is not None}


def write_plots(run: RunData, out_dir: Path, compare: Sequence[RunData] = (), top: int = 3) -> list[Path]:
    """The figures as PNG files in ``out_dir``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in figures(run, compare, top).items():
        written.append(out_dir / f"{name}.png")
        figure.savefig(written[-1], dpi=DPI, bbox_inches="tight")
    return written


class ReportFigure(Figure):
    """A figure that draws itself as a PNG where IPython shows it (a notebook's cell), with no
    pyplot backend behind it."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
        return buffer.getvalue()


def _subplots(*grid: int, figsize: tuple[float, float], **kwargs):
    """pyplot.subplots without pyplot: the figure belongs to no backend until it is shown or saved."""
    figure = ReportFigure(figsize=figsize)
    return figure, figure.subplots(*grid, **kwargs)


def _rewards(run: RunData):
    trained = run.trained
    points = [(n, r.reward) for n, r in enumerate(trained, 1) if r.status in SCORED and r.reward is not None]
    if not points:
        return None
    xs, ys = zip(*points)
    figure, ax = _subplots(figsize=(6.4, 3.6))
    ax.scatter(xs, ys, s=8, alpha=0.45, color="tab:blue", linewidths=0, label="child")
    window = max(5, len(ys) // 20)
    ax.plot(xs, moving_average(ys, window), color="tab:orange", lw=1.5, label=f"moving average ({window})")
    best, running = [], float("-inf")
    for y in ys:
        running = max(running, y)
        best.append(running)
    ax.step(xs, best, where="post", color="black", lw=1.2, label="best so far")
    failed = len(trained) - len(points)
    note = f" ({failed} not ok, not shown)" if failed else ""
    ax.set(xlabel="children trained (order of finishing)", ylabel="reward",
           title=f"Reward of every child: {run.label}{note}")
    _metric_axis(ax, run.metric)
    ax.legend(loc="lower right")
    return figure


def _control(runs: Sequence[RunData]):
    if not any(top_k_curve(run.rows, 1)[0] for run in runs):
        return None
    figure, ax = _subplots(figsize=(6.4, 4.0))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {1: "-", 5: "--", 15: ":"}
    for run, color in zip(runs, colors):
        for k in TOP_KS:
            xs, ys = top_k_curve(run.rows, k)
            if xs:
                ax.plot(xs, ys, styles[k], color=color, lw=1.5, label=f"{run.label}: top {k}")
    ax.set(xlabel="children trained", ylabel="mean reward of the top k",
           title="Top-k rewards against children trained")
    if len({run.metric.label if run.metric else None for run in runs}) == 1:
        _metric_axis(ax, runs[0].metric)
    ax.legend(loc="lower right", ncol=max(1, len(runs)))
    return figure


def _depth(run: RunData):
    points = [(n, r.depth) for n, r in enumerate(run.trained, 1) if r.depth is not None]
    if not points:
        return None  # the space has no depth
    xs, ys = zip(*points)
    figure, ax = _subplots(figsize=(6.4, 3.0))
    ax.step(xs, ys, where="post", color="tab:green", lw=1.5)
    ax.set(xlabel="children trained (order of finishing)", ylabel="layers",
           title=f"Depth in force under the curriculum: {run.label}")
    ax.yaxis.get_major_locator().set_params(integer=True)
    return figure


def _staleness(run: RunData):
    values = [r[7] for r in run.rounds]
    if not values:
        return None  # no controller updates (random search)
    figure, ax = _subplots(figsize=(5.0, 3.2))
    bins = [b - 0.5 for b in range(0, max(values) + 2)]
    ax.hist(values, bins=bins, color="tab:purple", rwidth=0.85)
    ax.set(xlabel="staleness (updates applied between pull and push)", ylabel="controller updates",
           title=f"Staleness of {len(values)} updates, mean {statistics.fmean(values):.2f}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return figure


def _throughput(run: RunData):
    ends = sorted(r.finished_at for r in run.trained if r.finished_at is not None)
    starts = [r.started_at for r in run.trained if r.started_at is not None]
    if len(ends) < 2:
        return None
    t0 = min(starts + ends)
    minutes = [(t - t0) / 60.0 for t in ends]
    span = max(minutes[-1], 1e-6)
    bins = min(30, max(5, len(ends) // 5))
    width = span / bins
    counts = [0] * bins
    for m in minutes:
        counts[min(int(m / width), bins - 1)] += 1
    figure, ax = _subplots(figsize=(6.4, 3.0))
    ax.bar([(i + 0.5) * width for i in range(bins)], [c / width for c in counts], width=width * 0.9,
           color="tab:cyan", label="in this interval")
    ax.axhline(len(ends) / span, color="black", lw=1, ls="--", label=f"overall {len(ends) / span:.1f}")
    ax.set(xlabel="minutes since the first child started", ylabel="children per minute",
           title=f"Throughput: {run.label}")
    ax.legend(loc="best", framealpha=0.9)
    return figure


def _controller(run: RunData):
    if not run.rounds:
        return None
    figure, (top, bottom) = _subplots(2, 1, figsize=(6.4, 4.4), sharex=True)
    steps = range(1, len(run.rounds) + 1)
    rewards = [(s, r[4]) for s, r in zip(steps, run.rounds) if r[4] is not None]
    if rewards:
        top.plot(*zip(*rewards), ".", ms=3, alpha=0.5, color="tab:blue", label="mean reward of the update")
    baselines = [(s, r[2]) for s, r in zip(steps, run.rounds) if r[2] is not None]
    if baselines:
        top.plot(*zip(*baselines), color="tab:orange", lw=1.5, label="baseline")
    top.set(ylabel="reward", title=f"Controller: {run.label}")
    top.legend(loc="lower right")
    bottom.plot(steps, [r[3] for r in run.rounds], color="tab:red", lw=1.2)
    bottom.set(xlabel="controller updates (all replicas)", ylabel="policy entropy (nats)")
    return figure


# --------------------------------------------------------------------------- architectures


def architecture_figure(value: dict, title: str):
    """A conv network as its layers and connections, or a recurrent cell as its tree and
    equations; None for a categorical architecture (the report's table says it all)."""
    draw = {"conv": _conv_diagram, "rnn_cell": _cell_diagram}.get(shape_of(value))
    return draw(value, title) if draw else None


def _box(ax, x, y, text, color, width=0.8, height=0.5, fontsize=7):
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="0.25", lw=0.8,
                                zorder=2))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=3)


def _arrow(ax, points, color="0.3"):
    """An arrow along straight segments through ``points``, its head at the last one."""
    codes = [MplPath.MOVETO] + [MplPath.LINETO] * (len(points) - 1)
    ax.add_patch(FancyArrowPatch(path=MplPath(points, codes), arrowstyle="-|>", mutation_scale=7,
                                 lw=0.8, color=color, shrinkA=0, shrinkB=0, zorder=1))


def _lanes(spans: list[tuple[int, int]]) -> list[int]:
    """A lane for each (top, bottom) span so that spans in one lane never touch (interval colouring)."""
    lanes: list[int] = [0] * len(spans)
    taken: list[list[tuple[int, int]]] = []
    for k in sorted(range(len(spans)), key=lambda k: (spans[k][1] - spans[k][0], spans[k])):
        a, b = spans[k]
        lane = next((i for i, used in enumerate(taken) if all(b < c or d < a for c, d in used)), len(taken))
        if lane == len(taken):
            taken.append([])
        taken[lane].append((a, b))
        lanes[k] = lane
    return lanes


def _conv_diagram(value: dict, title: str):
    """Layers top to bottom; the chain between neighbours straight down, longer connections
    routed in lanes: skips on the right (blue), the image and the classifier on the left."""
    layers = value["layers"]
    n = len(layers)
    fed = {j for layer in layers for j in layer["inputs"]}
    width, height, lane_gap, inch = 4.2, 0.6, 0.25, 0.6  # inch: figure inches per data unit
    y = {"image": 0.0, **{i: -float(i + 1) for i in range(n)}, "classifier": -float(n + 1)}
    right, left = [], []  # (from, to, colour) routed beside the column
    straight = []
    for i, layer in enumerate(layers):
        for j in layer["inputs"] or ["image"]:
            if j == i - 1 or (j == "image" and i == 0):
                straight.append((j, i))
            elif j == "image":
                left.append(("image", i, "0.45"))
            else:
                right.append((j, i, "tab:blue"))
        if i not in fed:
            (straight.append((i, "classifier")) if i == n - 1 else left.append((i, "classifier", "tab:red")))
    order = {"image": -1, **{i: i for i in range(n)}, "classifier": n}
    right_lanes = _lanes([(order[a], order[b]) for a, b, _ in right])
    left_lanes = _lanes([(order[a], order[b]) for a, b, _ in left])
    lanes_right = max(right_lanes, default=-1) + 1
    lanes_left = max(left_lanes, default=-1) + 1
    xlim = (-width / 2 - lane_gap * (lanes_left + 1), width / 2 + lane_gap * (lanes_right + 1))
    ylim = (-float(n + 1) - 0.5, 0.5)
    figure, ax = _subplots(figsize=(inch * (xlim[1] - xlim[0]), inch * (ylim[1] - ylim[0]) + 0.5))
    _box(ax, 0, y["image"], "image", "0.92", width, height)
    _box(ax, 0, y["classifier"], "global average pool + linear", "0.92", width, height)
    for i, layer in enumerate(layers):
        size = f"{layer['filter_height']}x{layer['filter_width']}"
        text = (f"{i}: conv {size}, {layer['num_filters']} filters" if layer["type"] == "conv"
                else f"{i}: {layer['type'].replace('_', ' ')} {size}")
        if layer["stride"] != 1:
            text += f", stride {layer['stride']}"
        _box(ax, 0, y[i], text, "#dbe9f6" if layer["type"] == "conv" else "#f6e3c8", width, height)
    for a, b in straight:
        _arrow(ax, [(0, y[a] - height / 2), (0, y[b] + height / 2)])
    for (a, b, color), lane in zip(right, right_lanes):
        x0, x1 = width / 2, width / 2 + lane_gap * (lane + 1)
        _arrow(ax, [(x0, y[a] - 0.08), (x1, y[a] - 0.08), (x1, y[b] + 0.08), (x0, y[b] + 0.08)], color)
    for (a, b, color), lane in zip(left, left_lanes):
        x0, x1 = -width / 2, -width / 2 - lane_gap * (lane + 1)
        _arrow(ax, [(x0, y[a] - 0.08), (x1, y[a] - 0.08), (x1, y[b] + 0.08), (x0, y[b] + 0.08)], color)
    hyper = value.get("hyperparameters") or {}
    if hyper:
        title += "\n" + ", ".join(f"{k} = {v}" for k, v in sorted(hyper.items()))
    ax.set(xlim=xlim, ylim=ylim)
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    ax.axis("off")
    return figure


def _cell_diagram(value: dict, title: str):
    """The tree bottom (leaves) to top (h_t), with c_{t-1} injected and c_t taken out, and
    the cell's equations beside it."""
    base, nodes, inject = value["base"], value["nodes"], value["inject"]
    levels: dict[int, int] = {}
    position: dict[int, tuple[float, float]] = {}
    for n in range(len(nodes)):
        children = node_inputs(base, n)
        levels[n] = 0 if children is None else levels[children[0]] + 1
        x = 1.2 * n if children is None else (position[children[0]][0] + position[children[1]][0]) / 2
        position[n] = (x, 1.25 * levels[n])
    top = max(levels.values())
    figure, (ax, text_ax) = _subplots(
        1, 2, figsize=(2.2 + 1.1 * base + 3.0, 1.6 + 1.1 * (top + 1)),
        gridspec_kw={"width_ratios": [1.1 * base + 1.0, 3.0], "wspace": 0.02})
    w, h = 1.0, 0.62
    for n, node in enumerate(nodes):
        children = node_inputs(base, n)
        x, y = position[n]
        if children is None:
            ax.text(x, y - 0.95, "x_t, h_t-1", ha="center", va="center", fontsize=6, color="0.35")
            _arrow(ax, [(x, y - 0.82), (x, y - h / 2)], "0.5")
        else:
            for c in children:
                cx, cy = position[c]
                _arrow(ax, [(cx, cy + h / 2), (x, y - h / 2)])
        color = "#f6e3c8" if n == inject["node"] else ("#d9f0d3" if n == value["cell_output"] else "#dbe9f6")
        _box(ax, x, y, f"a{n}\n{node['combine']}\n{node['activation']}", color, w, h)
    x, y = position[inject["node"]]
    _arrow(ax, [(x - w / 2 - 0.35, y + 0.45), (x - w / 2 - 0.35, y), (x - w / 2, y)], "tab:orange")
    ax.text(x - w / 2 - 0.35, y + 0.5, f"c_t-1\n{inject['combine']}, {inject['activation']}", ha="center",
            va="bottom", fontsize=6, color="tab:orange")
    x, y = position[value["cell_output"]]
    _arrow(ax, [(x + w / 2, y), (x + w / 2 + 0.35, y), (x + w / 2 + 0.35, y + 0.45)], "tab:green")
    ax.text(x + w / 2 + 0.35, y + 0.5, "c_t", ha="center", va="bottom", fontsize=7, color="tab:green")
    rx, ry = position[len(nodes) - 1]
    _arrow(ax, [(rx, ry + h / 2), (rx, ry + 0.75)])
    ax.text(rx, ry + 0.8, "h_t", ha="center", va="bottom", fontsize=8)
    xs = [p[0] for p in position.values()]
    ax.set(xlim=(min(xs) - 1.1, max(xs) + 1.1), ylim=(-1.2, 1.25 * top + 1.2))
    ax.set_aspect("equal")
    ax.axis("off")
    figure.suptitle(title, fontsize=9)
    text_ax.axis("off")
    text_ax.text(0.0, 0.5, "\n".join(cell_equations(value)), ha="left", va="center", fontsize=7,
                 family="monospace", transform=text_ax.transAxes)
    return figure


def label_of(run_dir: Path, strategy: Optional[str]) -> str:
    return f"{run_dir.name} ({strategy})" if strategy and strategy != run_dir.name else run_dir.name
