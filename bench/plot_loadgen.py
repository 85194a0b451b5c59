#!/usr/bin/python3
"""Plots chunkcache_loadgen's JSON (--json=FILE) as a PNG, one column per file, side by side.

    /usr/bin/python3 bench/plot_loadgen.py -o l1.png docs/perf/redis-l1-off.json \
        docs/perf/redis-l1-on.json

Rows, each sharing its latency or rate axis across the columns:
  1. latency p50 / p99 / max of the requests scheduled in each second (ms, log scale), with the
     cold start, invalidations and (for a rate sweep) each step's offered rate marked; for
     --read=stream, also chunkcache's p99 time to the first byte (a raw GET's equals its latency);
  2. requests served per second against the offered rate;
  3. for a rate sweep: p50 and p99 against the offered rate, with the p99 bound.
Each mode the file holds (chunkcache, and baseline with --mode=both) has its own colours.
chunkcache_loadgen runs this script when given --plot=FILE.png. Needs matplotlib
(Debian: python3-matplotlib). Exit status: 0 when the PNG is written, 2 on bad input.
"""

import argparse
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import FuncFormatter  # noqa: E402

# Log-scale ticks as plain numbers (0.1, 1, 10, 1000), not powers of ten.
PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
# Room above the highest latency for the markers' labels, as a factor on the log axis.
HEADROOM = 4

# [p50, p99, max] per mode.
COLOURS = {
    "chunkcache": ["#1f77b4", "#0e3878", "#6eafe1"],
    "baseline": ["#f07814", "#be2814", "#f5af6e"],
}
OFFERED = "#787878"
EVENT = "#6e3ca0"
STEP = "#aaaaaa"
BOUND = "#c80000"


class InputError(Exception):
    """A file that is not chunkcache_loadgen's JSON."""


def load(path):
    """The loadgen document at `path`, checked for the fields the plot reads."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: {e}") from e
    if not isinstance(doc, dict) or doc.get("tool") != "chunkcache_loadgen":
        raise InputError(f"{path}: not chunkcache_loadgen JSON (its \"tool\" is not "
                         "\"chunkcache_loadgen\")")
    if "config" not in doc or ("runs" not in doc and "sweeps" not in doc):
        raise InputError(f"{path}: no \"config\" with \"runs\" or \"sweeps\"")
    return doc


def by_mode(doc):
    """(mode, [runs laid end to end]) for each mode that ran: one run, or a sweep's steps."""
    if "sweeps" in doc:
        return [(s["mode"], s["steps"]) for s in doc["sweeps"] if s.get("available", True)]
    return [(r["mode"], [r]) for r in doc["runs"] if r.get("available", True)]


def column_label(doc):
    """What distinguishes one file's run: backend, L1, passthrough, stream, offered rate or sweep."""
    config = doc["config"]
    backend = config.get("backend", "?")
    if backend.startswith("redis-server") or backend.startswith("redis"):
        backend = "Redis"
    elif backend.startswith("memory"):
        backend = "memory"
    else:
        backend = backend.split(" (")[0]
    parts = [backend, "L1 " + ("on" if config.get("l1") else "off"),
             "passthrough " + ("on" if config.get("passthrough") else "off")]
    if config.get("read") == "stream":
        parts.append("GetStream")
    sweep = config.get("rate_sweep")
    if sweep:
        parts.append(f"rate sweep {sweep['from']:,.0f}-{sweep['to']:,.0f} req/s")
    else:
        parts.append(f"{config.get('rate', 0):,.0f} req/s offered")
    return ", ".join(parts)


def ms_or_nan(point, field):
    return point[field] if point["ok"] else math.nan


def log_latency_axis(ax):
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PLAIN)
    ax.grid(True, which="minor", axis="y", alpha=0.15)
    ax.set_ylabel("latency (ms, log scale)")


def share_latency_range(row):
    """One latency range for a row of log axes (so the columns compare), with HEADROOM on top."""
    shown = [ax for ax in row if ax.axison]
    if not shown:
        return
    low = min(ax.get_ylim()[0] for ax in shown)
    high = max(ax.get_ylim()[1] for ax in shown) * HEADROOM
    for ax in shown:
        ax.set_ylim(low, high)


def draw_time_panels(latency_ax, rate_ax, doc):
    """Rows 1 and 2 for one file; returns how many seconds they span."""
    is_sweep = "sweeps" in doc
    longest = 0.0
    for index, (mode, runs) in enumerate(by_mode(doc)):
        colours = COLOURS.get(mode, COLOURS["chunkcache"])
        # A raw GET delivers its first byte with its last: its TTFB is its latency, not drawn.
        streams = doc["config"].get("read") == "stream" and mode != "baseline"
        t, p50, p99, peak, ttfb, served, offered_t, offered = [], [], [], [], [], [], [], []
        t0 = 0.0
        for run in runs:
            seconds = math.ceil(run["seconds"])
            for point in run["series"]:
                if point["t"] >= seconds:  # the drain after the schedule
                    break
                t.append(t0 + point["t"] + 0.5)
                p50.append(ms_or_nan(point, "p50_ms"))
                p99.append(ms_or_nan(point, "p99_ms"))
                peak.append(ms_or_nan(point, "max_ms"))
                if streams:
                    ttfb.append(ms_or_nan(point, "ttfb_p99_ms"))
                served.append(point["completed"])
            offered_t += [t0, t0 + seconds]
            offered += [run["offered_rate"]] * 2
            if index == 0:  # the markers once per file, from its first mode
                if is_sweep:
                    latency_ax.axvline(t0, color=STEP, linestyle="--", linewidth=0.8)
                    latency_ax.annotate(f"{run['offered_rate']:,.0f}", (t0, 1), xytext=(3, -3),
                                        xycoords=("data", "axes fraction"),
                                        textcoords="offset points", va="top", fontsize=8,
                                        color=STEP)
                for at in run.get("invalidations_s", []):
                    text = "cold start" if at == 0 and run.get("cold") else "invalidate"
                    latency_ax.axvline(t0 + at, color=EVENT, linewidth=1)
                    latency_ax.annotate(text, (t0 + at, 1), xytext=(3, -14),
                                        xycoords=("data", "axes fraction"),
                                        textcoords="offset points", va="top", fontsize=9,
                                        color=EVENT)
            t0 += seconds
        longest = max(longest, t0)
        latency_ax.plot(t, p50, color=colours[0], linewidth=1.5, label=f"{mode} p50")
        latency_ax.plot(t, p99, color=colours[1], linewidth=2.5, label=f"{mode} p99")
        latency_ax.plot(t, peak, color=colours[2], linewidth=1, linestyle="--",
                        label=f"{mode} max")
        if streams:
            latency_ax.plot(t, ttfb, color=colours[1], linewidth=1.5, linestyle=":",
                            label=f"{mode} first byte p99")
        if index == 0:
            rate_ax.plot(offered_t, offered, color=OFFERED, linewidth=1, linestyle="--",
                         label="offered")
        rate_ax.plot(t, served, color=colours[0], linewidth=1.5, label=f"{mode} served")
    for ax in (latency_ax, rate_ax):
        ax.set_xlim(0, max(longest, 1))
        ax.set_xlabel("time into the measurement (s)")
        ax.grid(True, which="major", alpha=0.4)
    log_latency_axis(latency_ax)
    rate_ax.set_ylabel("requests per second (req/s)")
    rate_ax.set_ylim(0, rate_ax.get_ylim()[1] * 1.1)


def draw_sweep_panel(ax, doc):
    """Row 3 for one file: p50 and p99 against the offered rate."""
    sweep = doc["config"].get("rate_sweep", {})
    if "p99_bound_ms" in sweep:
        bound = sweep["p99_bound_ms"]
        ax.axhline(bound, color=BOUND, linestyle="--", linewidth=1,
                   label=f"p99 bound {bound:g} ms")
    for s in doc["sweeps"]:
        if not s.get("available", True) or not s["steps"]:
            continue
        colours = COLOURS.get(s["mode"], COLOURS["chunkcache"])
        rates = [r["offered_rate"] for r in s["steps"]]
        for key, colour, width in (("p50", colours[0], 1.5), ("p99", colours[1], 2.5)):
            values = [r["latency_ms"][key] if r["ok"] else math.nan for r in s["steps"]]
            ax.plot(rates, values, color=colour, linewidth=width, marker="s", markersize=4,
                    label=f"{s['mode']} {key}")
        if s.get("best_rate", 0) > 0:
            ax.axvline(s["best_rate"], color=colours[1], linestyle=":", linewidth=1.2,
                       label=f"{s['mode']} holds to {s['best_rate']:,.0f} req/s")
    ax.grid(True, which="major", alpha=0.4)
    ax.set_xlabel("offered rate (req/s)")
    log_latency_axis(ax)


def plot(docs, labels, title, output):
    columns = len(docs)
    sweep_row = any("sweeps" in d for d in docs)
    heights = [4.2, 2.8] + ([3.6] if sweep_row else [])
    figure, axes = plt.subplots(
        len(heights), columns, squeeze=False,
        figsize=(4.0 + 7.0 * columns, sum(heights) + 0.9),
        gridspec_kw={"height_ratios": heights}, layout="constrained")
    for column, (doc, label) in enumerate(zip(docs, labels)):
        draw_time_panels(axes[0][column], axes[1][column], doc)
        heading = "latency per second, by scheduled time"
        axes[0][column].set_title(f"{label}\n{heading}" if columns > 1 else heading, fontsize=11)
        axes[1][column].set_title("requests served per second (the drain after the end not shown)",
                                  fontsize=10)
        if sweep_row:
            if "sweeps" in doc:
                draw_sweep_panel(axes[2][column], doc)
                axes[2][column].set_title("rate sweep: latency against offered rate", fontsize=10)
            else:
                axes[2][column].set_axis_off()
    share_latency_range(axes[0])
    if sweep_row:
        share_latency_range(axes[2])
    for row in axes:  # one legend per row, right of the last column (the modes match across them)
        handles = {}
        for ax in row:
            for handle, text in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(text, handle)
        if handles:
            row[-1].legend(handles.values(), handles.keys(), loc="upper left",
                           bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=True)
    figure.suptitle(title, fontsize=13)
    figure.savefig(output, dpi=100, pil_kwargs={"optimize": True})
    plt.close(figure)


def main(argv):
    parser = argparse.ArgumentParser(
        description="Plot chunkcache_loadgen JSON files side by side (one column per file).")
    parser.add_argument("files", nargs="+", metavar="JSON", help="chunkcache_loadgen --json output")
    parser.add_argument("-o", "--output", required=True, metavar="PNG", help="the PNG to write")
    parser.add_argument("--label", action="append", default=[],
                        help="a column's heading, once per file in order "
                             "(default: backend, L1, passthrough and rate from the file)")
    parser.add_argument("--title", help="the figure's title (default: from the columns)")
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.files):
        parser.error(f"{len(args.label)} --label for {len(args.files)} files")
    try:
        docs = [load(path) for path in args.files]
        labels = args.label or [column_label(d) for d in docs]
        title = args.title or "chunkcache_loadgen: " + "  vs  ".join(labels)
        plot(docs, labels, title, args.output)
    except InputError as e:
        print(f"plot_loadgen: {e}", file=sys.stderr)
        return 2
    except (KeyError, TypeError) as e:
        print(f"plot_loadgen: a file lacks a field the plot reads: {e!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
