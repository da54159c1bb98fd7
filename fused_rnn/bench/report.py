"""Results as a Markdown table, JSON (with the environment) and CSV."""
import csv
import json
import math

_COLUMNS = [  # (header, key, format)
    ("case", "name", "{}"),
    ("torch ms (min–max)", None, None),
    ("fused ms (min–max)", None, None),
    ("speedup", "speedup", "{:.2f}×"),
    ("torch GFLOP/s", "torch_gflops", "{:.0f}"),
    ("fused GFLOP/s", "fused_gflops", "{:.0f}"),
    ("torch % peak", "torch_peak_fraction", "{:.0%}"),
    ("fused % peak", "fused_peak_fraction", "{:.0%}"),
    ("torch tok/s", "torch_tokens_per_s", "{:.3g}"),
    ("fused tok/s", "fused_tokens_per_s", "{:.3g}"),
    ("max abs diff", "max_abs_diff", "{:.1e}"),  # no "|": it would split the cell
]


def _ms(r, label):
    return "{:.2f} ({:.2f}–{:.2f})".format(r[f"{label}_median_ms"], r[f"{label}_min_ms"],
                                          r[f"{label}_max_ms"])


def _cell(r, key, fmt):
    v = r.get(key)
    return "" if v is None else fmt.format(v)


def markdown(results, env):
    cols = list(_COLUMNS)
    if any(r.get("fused_padded_median_ms") is not None for r in results):
        cols += [("fused padded ms", "fused_padded_median_ms", "{:.2f}"),
                 ("packed vs padded", "packed_vs_padded", "{:.2f}×")]
    if any(r.get("torch_peak_mem_mb") is not None for r in results):
        cols += [("torch peak MB", "torch_peak_mem_mb", "{:.0f}"),
                 ("fused peak MB", "fused_peak_mem_mb", "{:.0f}")]
    built, source = env.get("fused_rnn_commit"), env.get("source_commit")
    commit = built or "commit unknown"
    if source and built and source != built:  # the checkout moved on since the build
        commit += f", checkout now at {source}"
    lines = [
        f"fused_rnn {env['fused_rnn_version']} ({commit}) vs "
        f"torch {env['torch_version']} on {env['device_model']} ({env['device']}, "
        f"{env['threads']} threads, {env['dtype']}"
        f"{', TF32 ' + env['tf32'] if env.get('tf32', 'n/a') != 'n/a' else ''}"
        f"{', autocast ' + env['autocast'] if env.get('autocast', 'off') != 'off' else ''}"
        f"); measured GEMM peak "
        f"{env['gemm_peak_gflops']:.0f} GFLOP/s",
        "",
        "| " + " | ".join(h for h, _, _ in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in results:
        if r["status"] != "ok":
            row = [r["name"]] + [""] * (len(cols) - 2) + [
                f"{r['status']}: {r['note']}"]
            lines.append("| " + " | ".join(row) + " |")
            continue
        row = []
        for h, key, fmt in cols:
            if key is None:
                row.append(_ms(r, "torch" if h.startswith("torch") else "fused"))
            else:
                row.append(_cell(r, key, fmt))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _finite(v):
    """v with every non-finite float as None: strict JSON has no Infinity or NaN (a
    mismatch's difference is inf)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def write_json(path, results, env, command):
    with open(path, "w") as f:
        json.dump(_finite({"command": command, "environment": env, "results": results}), f,
                  indent=1, allow_nan=False)


def write_csv(path, results, env):
    """One row per case; the environment's scalar fields are repeated on every row."""
    env_cols = {f"env_{k}": v for k, v in env.items() if not isinstance(v, dict)}
    keys = []
    for r in results:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys + list(env_cols))
        w.writeheader()
        for r in results:
            w.writerow({**r, **env_cols})
