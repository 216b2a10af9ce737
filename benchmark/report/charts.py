"""The report's charts (matplotlib, Agg canvas, no pyplot state): each function takes the frame
from :mod:`benchmark.report.chartdata` and a :class:`ChartContext` and returns a Figure.

Every chart has axis labels with units, a legend (or a colour bar), a title naming the marathon,
the models and n (complete replicates), and, when any model is simulated (``scripted/...``) or
an agent uses no model (oracle, nop), a red "SIMULATED" marking at the bottom.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict

from benchmark.report.chartdata import TOKEN_KINDS
from benchmark.report.load import CONFIG_KEYS, Results

#: Names of the chart files (without extension), in report order.
CHART_NAMES = ("marathon", "gate_survival", "regressions", "recovery", "token_audit")

_KIND_LABELS = {"input_tokens": "input", "output_tokens": "output",
                "cache_write_tokens": "cache write", "cache_read_tokens": "cache read"}


class ChartContext(BaseModel):
    """What every chart needs besides its data."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    marathon: str
    """Marathon name (in every title)."""
    episodes: list[str]
    """Episode ids in order (x axes)."""
    arms: list[str]
    """Arm names in order (line and bar order, colours)."""
    gates: list[str]
    """Gate names ordered by the episode they become active in, then name (heat map rows)."""
    marking: str
    """The SIMULATED marking, empty when every model is real."""


def chart_context(results: Results) -> ChartContext:
    """The :class:`ChartContext` of a set of results."""
    parts = []
    sims = results.simulated_models()
    if sims:
        parts.append("scripted model " + ", ".join(sims))
    if results.no_model_agents():
        parts.append("no model (oracle/nop)")
    order = {e: i for i, e in enumerate(results.episodes)}
    g = results.checks[["gate", "gate_active_from"]].drop_duplicates()
    gates = sorted(zip(g["gate_active_from"].map(order).fillna(99), g["gate"]))
    return ChartContext(marathon=results.marathon, episodes=results.episodes, arms=results.arms,
                        gates=list(dict.fromkeys(name for _, name in gates)),
                        marking=("SIMULATED: " + "; ".join(parts)) if parts else "")


def _configs(frame: pd.DataFrame) -> list[tuple]:
    if frame.empty:
        return []
    return list(frame[CONFIG_KEYS].drop_duplicates().sort_values(CONFIG_KEYS)
                .itertuples(index=False, name=None))


def _config_label(config: tuple) -> str:
    _, model, effort, agent, mode = config
    label = f"agent {agent}, model {model}"
    return (label + (f", effort {effort}" if effort != "none" else "")
            + (f", {mode}" if mode != "cumulative" else ""))


def _select(frame: pd.DataFrame, config: tuple) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for k, v in zip(CONFIG_KEYS, config):
        mask &= (frame[k] == v).to_numpy()
    return frame[mask]


def _n_text(frame: pd.DataFrame) -> str:
    """``n = 5 complete replicates per arm`` (or a range when groups differ)."""
    if frame.empty or "n" not in frame.columns:
        return "n = 0 complete replicates"
    n = frame.groupby(CONFIG_KEYS + ["arm"], observed=True)["n"].max()
    lo, hi = int(n.min()), int(n.max())
    return f"n = {lo} complete replicates per arm" if lo == hi else \
        f"n = {lo}-{hi} complete replicates per arm"


def _colors(ctx: ChartContext) -> dict[str, tuple]:
    from matplotlib import colormaps
    cmap = colormaps["tab10"]
    return {a: cmap(i % 10) for i, a in enumerate(ctx.arms)}


def _new_figure(nrows: int, ncols: int, width: float, height: float):
    # At least 7 in wide, so the two-line title naming marathon, model and n fits.
    fig = Figure(figsize=(max(width * ncols, 7.0), height * nrows + 1.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _finish(fig: Figure, ctx: ChartContext, title: str, models: list[str], n_text: str) -> Figure:
    fig.suptitle(f"{ctx.marathon}: {title}\nmodel{'s' if len(models) > 1 else ''} "
                 f"{', '.join(models) or 'none'}; {n_text}", fontsize=11)
    if ctx.marking:
        fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
        fig.text(0.5, 0.01, ctx.marking, ha="center", va="bottom", color="#c00000",
                 fontsize=11, fontweight="bold")
    return fig


def _empty(fig: Figure, ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555555")


def _models(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["model"].astype(str).unique()) if not frame.empty else []


def plot_marathon(curve: pd.DataFrame, ctx: ChartContext) -> Figure:
    """The marathon chart: mean score after each cumulative episode, one line per arm, with its
    bootstrap interval as a band; one panel per agent x model x effort.

    Args:
        curve: :func:`benchmark.report.chartdata.marathon_curve`.
    """
    configs = _configs(curve) or [None]
    ncols = min(3, len(configs))
    nrows = -(-len(configs) // ncols)
    fig, axes = _new_figure(nrows, ncols, 5.5, 3.8)
    colors = _colors(ctx)
    x_all = np.arange(1, len(ctx.episodes) + 1)
    for i, ax in enumerate(axes.flat):
        if i >= len(configs):
            ax.set_visible(False)
            continue
        ax.set_xticks(x_all, ctx.episodes)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("episode (cumulative: earlier gates stay active)")
        ax.set_ylabel("score after episode\n(share of active gates green, 0-1)")
        ax.grid(alpha=0.3)
        if configs[i] is None:
            _empty(fig, ax, "no complete trials")
            ax.plot([], [], label="no data")
            ax.legend(loc="lower left", fontsize=8)
            continue
        sub = _select(curve, configs[i])
        arms = [a for a in ctx.arms if a in set(sub["arm"])]
        width = 0.08 * (len(arms) - 1)
        for j, arm in enumerate(arms):
            d = sub[sub["arm"] == arm].sort_values("episode_index")
            x = d["episode_index"].to_numpy() + (j * 0.08 - width / 2)  # separate overlapping lines
            ax.fill_between(x, d["ci_low"], d["ci_high"], color=colors[arm], alpha=0.15, lw=0)
            ax.plot(x, d["mean_score"], marker="o", color=colors[arm],
                    label=f"{arm} (n={int(d['n'].max())})")
        ax.set_title(_config_label(configs[i]), fontsize=10)
        ax.legend(loc="best", fontsize=8, title="arm (band: bootstrap 95% CI)",
                  title_fontsize=8)
    return _finish(fig, ctx, "score after each episode", _models(curve), _n_text(curve))


def _heat_grid(frame: pd.DataFrame, ctx: ChartContext, value: str, title: str, cmap: str,
               vmax: float, cbar_label: str, cell_text) -> Figure:
    configs = _configs(frame) or [None]
    cells = [(c, a) for c in configs for a in ctx.arms
             if c is not None and a in set(_select(frame, c)["arm"])] or [(None, None)]
    per_config = max(1, max(sum(1 for c2, _ in cells if c2 == c) for c in configs))
    ncols = min(per_config if per_config <= 4 else 3, len(cells))  # a row per configuration
    nrows = -(-len(cells) // ncols)
    fig, axes = _new_figure(nrows, ncols, 4.6, 0.45 * len(ctx.gates) + 2.0)
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= len(cells):
            ax.set_visible(False)
            continue
        config, arm = cells[i]
        ax.set_xticks(range(len(ctx.episodes)), ctx.episodes)
        ax.set_yticks(range(len(ctx.gates)), ctx.gates)
        ax.set_xlabel("episode")
        ax.set_ylabel("gate")
        if config is None:
            _empty(fig, ax, "no complete trials")
            continue
        d = _select(frame, config)
        d = d[d["arm"] == arm]
        grid = np.full((len(ctx.gates), len(ctx.episodes)), np.nan)
        gi = {g: k for k, g in enumerate(ctx.gates)}
        ei = {e: k for k, e in enumerate(ctx.episodes)}
        rows = d["gate"].map(gi).to_numpy()
        cols = d["episode"].map(ei).to_numpy()
        ok = ~(pd.isna(rows) | pd.isna(cols))
        grid[rows[ok].astype(int), cols[ok].astype(int)] = d[value].to_numpy(dtype=float)[ok]
        image = ax.imshow(grid, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
        for r, c, text in zip(rows[ok].astype(int), cols[ok].astype(int), cell_text(d[ok])):
            ax.text(c, r, text, ha="center", va="center", fontsize=7)
        ax.set_title(f"{arm}\n{_config_label(config)}, n={int(d['replicates'].max()) if len(d) else 0}",
                     fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label=cbar_label, shrink=0.8)
    return _finish(fig, ctx, title, _models(frame), _n_text(frame.assign(n=frame["replicates"])
                                                         if len(frame) else frame))


def plot_gate_survival(survival: pd.DataFrame, ctx: ChartContext) -> Figure:
    """Gate survival: per arm (and agent x model), a gate x episode heat map of the share of
    replicates in which the gate is green after the episode; blank cells: gate not yet active.

    Args:
        survival: :func:`benchmark.report.chartdata.gate_survival`.
    """
    frame = survival.assign(replicates=survival["n"]) if len(survival) else \
        survival.assign(replicates=pd.Series(dtype="int64"))
    return _heat_grid(frame, ctx, "share", "gate survival (share of replicates with the gate green)",
                      "RdYlGn", 1.0, "share of replicates green (0-1)\nblank: gate not yet active",
                      lambda d: [f"{s:.0%}" for s in d["share"]])


def plot_regressions(regs: pd.DataFrame, ctx: ChartContext, replicates: pd.DataFrame) -> Figure:
    """Regressions: per arm (and agent x model), a gate x breaking-episode heat map of how many
    replicates had the gate green after the previous episode and red after this one; cells read
    ``broken/at risk``; blank: gate not active before that episode.

    Args:
        regs: :func:`benchmark.report.chartdata.regressions`.
        replicates: the summary table (for n per group).
    """
    n = replicates[CONFIG_KEYS + ["arm", "replicates"]]
    frame = regs.merge(n, on=CONFIG_KEYS + ["arm"], how="left") if len(regs) else \
        regs.assign(replicates=pd.Series(dtype="int64"))
    vmax = max(1.0, float(regs["broken"].max()) if len(regs) else 1.0)
    return _heat_grid(frame, ctx, "broken", "regressions (which episode broke which earlier gate)",
                      "Reds", vmax, "regressions (replicates in which the episode broke the gate, count)",
                      lambda d: [f"{b}/{a}" for b, a in zip(d["broken"], d["n"])])


def plot_recovery(rec: pd.DataFrame, ctx: ChartContext) -> Figure:
    """Recovery attempts per arm: mean recovery attempts per replicate, stacked by episode, and
    on top of them, hatched, the mean red self-checks per replicate (in-episode recoveries of
    arms with self-checks), stacked by episode too; one panel per agent x model x effort.

    Args:
        rec: :func:`benchmark.report.chartdata.recovery`.
    """
    configs = _configs(rec) or [None]
    ncols = min(3, len(configs))
    nrows = -(-len(configs) // ncols)
    fig, axes = _new_figure(nrows, ncols, 5.0, 3.8)
    from matplotlib import colormaps
    cmap = colormaps["viridis"]
    ep_colors = {e: cmap(k / max(1, len(ctx.episodes) - 1)) for k, e in enumerate(ctx.episodes)}
    for i, ax in enumerate(axes.flat):
        if i >= len(configs):
            ax.set_visible(False)
            continue
        ax.set_ylabel("recovery attempts per replicate\n(count, mean; hatched: red self-checks)")
        ax.set_xlabel("arm")
        ax.grid(axis="y", alpha=0.3)
        if configs[i] is None:
            _empty(fig, ax, "no complete trials")
            ax.bar([], [], label="no data")
            ax.legend(fontsize=8)
            continue
        sub = _select(rec, configs[i])
        arms = [a for a in ctx.arms if a in set(sub["arm"])]
        table = (sub.pivot_table(index="arm", columns="episode", values="per_trial",
                                 aggfunc="sum", observed=True)
                 .reindex(index=arms, columns=ctx.episodes).fillna(0))
        n = sub.groupby("arm")["n"].max().reindex(arms)
        bottom = np.zeros(len(arms))
        for e in ctx.episodes:
            ax.bar(range(len(arms)), table[e].to_numpy(), bottom=bottom, color=ep_colors[e],
                   label=f"episode {e}")
            bottom += table[e].to_numpy()
        if "self_check_per_trial" in sub.columns and sub["self_check_per_trial"].fillna(0).any():
            checks = (sub.pivot_table(index="arm", columns="episode", values="self_check_per_trial",
                                      aggfunc="sum", observed=True)
                      .reindex(index=arms, columns=ctx.episodes).fillna(0))
            for j, e in enumerate(ctx.episodes):
                ax.bar(range(len(arms)), checks[e].to_numpy(), bottom=bottom, color=ep_colors[e],
                       hatch="//", edgecolor="white", alpha=0.8,
                       label="red self-checks (in-episode), hatched" if j == 0 else None)
                bottom += checks[e].to_numpy()
        for x, (total, k) in enumerate(zip(bottom, n)):
            ax.text(x, total, f"{total:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(arms)), [f"{a}\n(n={int(k)})" for a, k in zip(arms, n)],
                      fontsize=8)
        ax.set_ylim(0, max(1.0, float(bottom.max()) * 1.2))
        ax.set_title(_config_label(configs[i]), fontsize=10)
        ax.legend(fontsize=8, title="episode of the attempts", title_fontsize=8)
    return _finish(fig, ctx, "recovery attempts per arm", _models(rec), _n_text(rec))


def plot_token_audit(tokens: pd.DataFrame, ctx: ChartContext) -> Figure:
    """The token audit: mean tokens per replicate by kind (input, output, cache write, cache
    read; stacked) and mean cost per replicate in USD, per arm; one row of panels per agent x
    model x effort.

    Args:
        tokens: :func:`benchmark.report.chartdata.token_audit`.
    """
    configs = _configs(tokens) or [None]
    fig, axes = _new_figure(len(configs), 2, 5.0, 3.6)
    colors = {k: c for k, c in zip(TOKEN_KINDS, ["#4c72b0", "#dd8452", "#55a868", "#8172b3"])}
    for row, config in enumerate(configs):
        ax_t, ax_c = axes[row]
        ax_t.set_ylabel("tokens per replicate (mean)")
        ax_c.set_ylabel("cost per replicate (USD, mean)")
        for ax in (ax_t, ax_c):
            ax.set_xlabel("arm")
            ax.grid(axis="y", alpha=0.3)
        if config is None:
            for ax in (ax_t, ax_c):
                _empty(fig, ax, "no complete trials")
            continue
        sub = _select(tokens, config)
        arms = [a for a in ctx.arms if a in set(sub["arm"])]
        sub = sub.set_index("arm").reindex(arms)
        n = sub["n"].to_numpy(dtype=float)
        x = np.arange(len(arms))
        labels = [f"{a}\n(n={int(k)})" for a, k in zip(arms, n)]
        bottom = np.zeros(len(arms))
        for kind in TOKEN_KINDS:
            per = sub[kind].to_numpy(dtype=float) / n
            ax_t.bar(x, per, bottom=bottom, color=colors[kind], label=_KIND_LABELS[kind])
            bottom += per
        cost = sub["cost_usd"].to_numpy(dtype=float) / n
        ax_c.bar(x, np.nan_to_num(cost), color="#c44e52", label="cost (USD per replicate)")
        for xi, c in zip(x, cost):
            ax_c.text(xi, 0 if np.isnan(c) else c, "n/a" if np.isnan(c) else f"${c:.2f}",
                      ha="center", va="bottom", fontsize=8)
        for ax in (ax_t, ax_c):
            ax.set_xticks(x, labels, fontsize=8)
        if bottom.sum() == 0:
            _empty(fig, ax_t, "no usage recorded\n(no model called)")
            ax_t.set_ylim(0, 1)
        if np.all(np.nan_to_num(cost) == 0):
            ax_c.set_ylim(0, 1)
        ax_t.legend(fontsize=8, title="token kind", title_fontsize=8)
        ax_c.legend(fontsize=8)
        ax_t.set_title(f"tokens: {_config_label(config)}", fontsize=10)
        ax_c.set_title(f"cost: {_config_label(config)}", fontsize=10)
    return _finish(fig, ctx, "token audit (tokens by kind and cost per arm)", _models(tokens),
                   _n_text(tokens))


def plot_debt(debt: pd.DataFrame, ctx: ChartContext) -> Figure:
    """Debt per episode: isolated minus cumulative score on the same seeds, one line per arm
    with its paired bootstrap interval as error bars; one panel per agent x model x effort.
    Above 0: the episode scored higher when started from the previous reference than from
    the agent's own workspace.

    Args:
        debt: :func:`benchmark.report.debt.debt_table` of one marathon.
    """
    keys = ["model", "effort", "agent"]
    configs = (list(debt[keys].drop_duplicates().sort_values(keys).itertuples(index=False, name=None))
               if len(debt) else []) or [None]
    ncols = min(3, len(configs))
    nrows = -(-len(configs) // ncols)
    fig, axes = _new_figure(nrows, ncols, 5.5, 3.8)
    colors = _colors(ctx)
    for i, ax in enumerate(axes.flat):
        if i >= len(configs):
            ax.set_visible(False)
            continue
        ax.set_xticks(np.arange(1, len(ctx.episodes) + 1), ctx.episodes)
        ax.set_ylim(-1.05, 1.05)
        ax.axhline(0, color="#888888", lw=0.8)
        ax.set_xlabel("episode")
        ax.set_ylabel("debt: isolated - cumulative score\n(same seeds, -1..1)")
        ax.grid(alpha=0.3)
        if configs[i] is None:
            _empty(fig, ax, "no pairs of isolated and cumulative trials")
            continue
        model, effort, agent = configs[i]
        sub = debt[(debt["model"] == model) & (debt["effort"] == effort) & (debt["agent"] == agent)]
        arms = [a for a in ctx.arms if a in set(sub["arm"])]
        width = 0.08 * (len(arms) - 1)
        for j, arm in enumerate(arms):
            d = sub[sub["arm"] == arm].sort_values("episode_index")
            x = d["episode_index"].to_numpy(dtype=float) + (j * 0.08 - width / 2)
            y = d["debt"].to_numpy(dtype=float)
            err = np.vstack([y - d["ci_low"].to_numpy(dtype=float), d["ci_high"].to_numpy(dtype=float) - y])
            ax.errorbar(x, y, yerr=np.clip(err, 0, None), marker="o", capsize=3, color=colors[arm],
                        label=f"{arm} (pairs={int(d['pairs'].max())})")
        ax.set_title(_config_label(("", model, effort, agent, "cumulative")), fontsize=10)
        ax.legend(loc="best", fontsize=8, title="arm (bars: paired bootstrap 95% CI)",
                  title_fontsize=8)
    n = debt["pairs"] if len(debt) else pd.Series(dtype="int64")
    n_text = ("no pairs" if n.empty else f"pairs per arm: {int(n.min())}" if n.min() == n.max()
              else f"pairs per arm: {int(n.min())}-{int(n.max())}")
    return _finish(fig, ctx, "debt (isolated minus cumulative score per episode)",
                   _models(debt), n_text)


def save_figure(fig: Figure, out_dir: Path, name: str, dpi: int = 150) -> list[Path]:
    """Write ``<out_dir>/<name>.png`` and ``<name>.svg`` (text kept as text, so titles stay
    editable and searchable); return both paths."""
    from matplotlib import rc_context

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    # bbox_inches="tight" keeps any long title or label inside the image instead of clipping it.
    fig.savefig(paths[0], dpi=dpi, bbox_inches="tight")
    with rc_context({"svg.fonttype": "none"}):
        fig.savefig(paths[1], bbox_inches="tight")
    return paths
