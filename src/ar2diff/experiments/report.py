"""The experiment report: tables next to the paper's numbers, findings checked, plots, provenance.

Each evaluation in the spec names its ``table``, ``row``, ``col`` and ``metric`` (and optionally
the paper's value, ``paper``). Each table may list ``findings``: a claim and the comparison that
tests it (``better`` and ``worse`` cells as ``row / col``). A finding *held* when the better
cell scores higher, *did not hold* when it does not, and is *uninformative* when both are zero.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ar2diff.atomic import write_json_atomic  # noqa: E402


def metric_value(result: dict, metric: str) -> float | None:
    value = result.get("metrics", {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


def _cells(spec: dict, results: dict) -> dict[str, dict[tuple[str, str], dict]]:
    tables: dict[str, dict[tuple[str, str], dict]] = {}
    for name, entry in spec["evaluations"].items():
        res = results[name]
        tables.setdefault(entry["table"], {})[(entry["row"], entry["col"])] = {
            "eval": name, "value": metric_value(res, entry["metric"]), "paper": entry.get("paper"),
            "metric": entry["metric"], "n": res.get("num_examples"),
            "seconds": res.get("seconds"), "run": bool(res),
        }
    return tables


def _table_md(cells: dict[tuple[str, str], dict]) -> list[str]:
    rows = list(dict.fromkeys(r for r, _ in cells))
    cols = list(dict.fromkeys(c for _, c in cells))
    lines = ["| system | " + " | ".join(f"{c} (ours / paper)" for c in cols) + " |",
             "| --- |" + " --- |" * len(cols)]
    for r in rows:
        out = []
        for c in cols:
            cell = cells.get((r, c))
            if cell is None:
                out.append("–")
                continue
            ours = ("not run" if not cell.get("run", True) else "n/a" if cell["value"] is None
                    else f"{cell['value']:.2f}")
            paper = "–" if cell["paper"] is None else f"{cell['paper']}"
            out.append(f"{ours} / {paper}")
        lines.append(f"| {r} | " + " | ".join(out) + " |")
    return lines


def _finding(cells: dict[tuple[str, str], dict], finding: dict) -> str:
    def get(ref: str) -> float | None:
        row, col = (s.strip() for s in ref.split("/"))
        cell = cells.get((row, col))
        return None if cell is None else cell["value"]

    better, worse = get(finding["better"]), get(finding["worse"])
    if better is None or worse is None:
        verdict = "not measured"
    elif better == 0 and worse == 0:
        verdict = "uninformative (both score 0)"
    elif better > worse:
        verdict = f"held ({better:.2f} > {worse:.2f})"
    else:
        verdict = f"did not hold ({better:.2f} ≤ {worse:.2f})"
    return f"- {finding['claim']} — **{verdict}**"


def _plot_table3(cells: dict[tuple[str, str], dict], out: Path) -> Path | None:
    if not cells:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, prefix in zip(axes, ("T", "N"), strict=True):
        for col in dict.fromkeys(c for _, c in cells):
            pts = sorted((int(r.split("=")[1]), v["value"]) for (r, c), v in cells.items()
                         if c == col and r.startswith(prefix + "=") and v["value"] is not None)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=col)
        ax.set_xlabel({"T": "diffusion steps T", "N": "parallel samples N"}[prefix])
        ax.set_ylabel("score")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "table3_steps_samples.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_timing(timing: list[dict], out: Path) -> Path | None:
    rows = [r for r in timing if "seconds" in r]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, label in (("ar_greedy", "AR greedy, KV cache"),
                          ("diffusion_n1", "diffusion, T = 10, N = 1")):
        pts = sorted((r["length"], r["seconds"]) for r in rows if r["method"] == method)
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=label)
    ax.set_xlabel("output tokens")
    ax.set_ylabel("seconds per request")
    ax.legend()
    fig.tight_layout()
    path = out / "figure3_decode_time.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_bars(name: str, cells: dict[tuple[str, str], dict], out: Path) -> Path:
    cols = list(dict.fromkeys(c for _, c in cells))
    rows = list(dict.fromkeys(r for r, _ in cells))
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        vals = [cells.get((r, col), {}).get("value") or 0.0 for r in rows]
        ax.barh(rows, vals)
        ax.set_title(col, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    path = out / f"{name.lower().replace(' ', '_')}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(spec: dict, spec_path: Path, out: Path, results: dict, timing: list[dict]) -> dict:
    """Write ``REPORT.md``, ``results.json`` and the plots into ``out``; returns the summary."""
    from ar2diff.provenance import git_commit

    tables = _cells(spec, results)
    commit = git_commit()
    lines = [f"# Experiment report: {spec['name']}", "",
             f"Generated {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} from "
             f"`{spec_path}` at commit `{commit}`. Every number below is in `results.json`; "
             "each evaluation's metrics, predictions and decoding setup are in "
             "`results/<evaluation>.json`, and each model's full training config in "
             "`models/<name>/config.yaml`.", ""]
    lines += [spec.get("description", "").strip(), ""]
    plots = []
    for name, cells in tables.items():
        lines += [f"## {name}", "", *_table_md(cells), ""]
        lines += [f"Metric per cell: {', '.join(sorted({c['metric'] for c in cells.values()}))}; "
                  f"examples per cell: {sorted({c['n'] for c in cells.values() if c['run']})}.",
                  ""]
        missing = [c["eval"] for c in cells.values() if not c["run"]]
        if missing:
            lines += [f"Not run yet: {', '.join(missing)}.", ""]
        findings = spec.get("findings", {}).get(name, [])
        if findings:
            lines += ["Findings at this scale:", ""] + [_finding(cells, f) for f in findings] + [""]
        if name.startswith("Table 3"):
            plot = _plot_table3(cells, out)
        else:
            plot = _plot_bars(name, cells, out)
        if plot:
            plots.append(plot.name)
            lines += [f"![{name}]({plot.name})", ""]
    timing_plot = _plot_timing(timing, out)
    if timing_plot:
        plots.append(timing_plot.name)
        lines += ["## Figure 3: decode time against output length", "",
                  "| output tokens | AR greedy (s) | diffusion T=10, N=1 (s) |", "| --- | --- | --- |"]
        for length in sorted({r["length"] for r in timing}):
            secs = {r["method"]: r.get("seconds") for r in timing if r["length"] == length}
            lines.append(f"| {length} | {secs.get('ar_greedy', float('nan')):.2f} | "
                         f"{secs.get('diffusion_n1', float('nan')):.2f} |")
        lines += ["", f"![Figure 3]({timing_plot.name})", ""]
    lines += ["## Notes", "", spec.get("notes", "").strip(), ""]
    (out / "REPORT.md").write_text("\n".join(lines), encoding="utf-8")
    summary = {"name": spec["name"], "commit": commit, "tables": {
        name: [{"row": r, "col": c, **v} for (r, c), v in cells.items()]
        for name, cells in tables.items()}, "timing": timing, "plots": plots,
        "config": spec}
    write_json_atomic(out / "results.json", summary)
    (out / "experiment.yaml").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return summary
