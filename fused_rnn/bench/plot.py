"""PNG of the speedup per case (needs matplotlib: `pip install fused_rnn[plot]`)."""


def write_png(path, results, env):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError as err:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from err
    ok = [r for r in results if r["status"] == "ok"]
    if not ok:
        raise RuntimeError("--plot: no case was timed")
    names = [r["name"] for r in ok]
    speed = [r["speedup"] for r in ok]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(ok) + 1.5))
    colors = ["tab:green" if s >= 1 else "tab:red" for s in speed]
    # Bars grow from parity (1x) to the speedup, left for slower, right for faster.
    ax.barh(range(len(ok)), [s - 1 for s in speed], left=1, color=colors)
    ax.set_xscale("log")  # 0.5x and 2x are equally far from parity
    # Labels on a few round ratios only (minor log ticks crowd together below 1x).
    lo, hi = min(min(speed), 1.0) / 1.4, max(max(speed), 1.0) * 1.3  # room for the labels
    ax.set_xlim(lo, hi)
    ticks = [t for t in (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 50, 100) if lo <= t <= hi]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(range(len(ok)))
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup over torch.nn (median time ratio)")
    ax.set_title(f"fused_rnn vs torch {env['torch_version']} on {env['device_model']} "
                 f"({env['dtype']})", fontsize=9)
    for i, s in enumerate(speed):  # the label beyond the bar's far end, either side of 1x
        ax.text(s, i, f" {s:.2f}× " if s >= 1 else f"{s:.2f}× ", va="center", fontsize=7,
                ha="left" if s >= 1 else "right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
