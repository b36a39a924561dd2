"""Plot `bench/locks.py --json`: lock pairs/s against processes, one line per implementation.

    .venv/bin/python -m bench.locks --json --seconds 1 > var/locks.json
    .venv/bin/python -m bench.plot var/locks.json                # writes docs/lock-pairs.png
    .venv/bin/python -m bench.locks --json --seconds 1 | .venv/bin/python -m bench.plot -o out.png

Two panels: distinct keys (every process its own app; all write the one lock row for lockman
and naive_cas) and the same key (every process wants `app:same` X). Reads
{"runs": [{"impl", "keys", "n", "pairs_per_s", "acquire_p50_ms", "acquire_p99_ms", ...}], "violations"}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: write a file only

import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "lock-pairs.png"

#: Drawing order and styles: lockman stands out, the baselines are thinner and dashed.
STYLES: dict[str, dict[str, Any]] = {
    "lockman": {"color": "#1f4e9c", "linewidth": 2.6, "marker": "o", "linestyle": "-"},
    "naive_cas": {"color": "#c0392b", "linewidth": 1.6, "marker": "s", "linestyle": "--"},
    "get_lock": {"color": "#7d7d7d", "linewidth": 1.6, "marker": "^", "linestyle": "--"},
    "row_per_lock": {"color": "#2e8b57", "linewidth": 1.6, "marker": "D", "linestyle": ":"},
}
PANELS = (
    ("distinct", "distinct keys: app:<i> X (+ platform S for the CAS ones)"),
    ("same", "same key: app:same X"),
)


def load(source: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        data: dict[str, Any] = json.loads(text)
    except (OSError, ValueError) as err:
        raise SystemExit(f"plot: cannot read {source}: {err}") from err
    if not isinstance(data.get("runs"), list) or not data["runs"]:
        raise SystemExit(f"{source}: no runs in this JSON; expected the output of `bench/locks.py --json`")
    for run in data["runs"]:
        missing = {"impl", "keys", "n", "pairs_per_s"} - set(run)
        if missing:
            raise SystemExit(f"{source}: a run lacks {', '.join(sorted(missing))}: {run}")
    return data


def series(runs: list[dict[str, Any]], keys: str) -> dict[str, list[tuple[int, float]]]:
    """impl -> [(n, pairs/s)] sorted by n, for one key pattern; implementations in STYLES order first."""
    found: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        if run["keys"] == keys:
            found.setdefault(run["impl"], []).append((int(run["n"]), float(run["pairs_per_s"])))
    order = [i for i in STYLES if i in found] + sorted(i for i in found if i not in STYLES)
    return {impl: sorted(found[impl]) for impl in order}


def plot(data: dict[str, Any], out: Path, *, title: str = "") -> None:
    runs = data["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, sharey=False)
    ns = sorted({int(r["n"]) for r in runs})
    for ax, (keys, label) in zip(axes, PANELS, strict=True):
        lines = series(runs, keys)
        for impl, points in lines.items():
            style = STYLES.get(impl, {"linewidth": 1.4, "marker": "x"})
            ax.plot([n for n, _ in points], [v for _, v in points], label=impl, **style)
        ax.set_title(label, fontsize=11)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("processes (N)")
        ax.set_ylabel("acquire + release pairs / s")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="major", alpha=0.3)
        if not lines:
            ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(fontsize=9, frameon=False)
    violations = data.get("violations", 0)
    heading = title or "lock pairs/s against processes (bench/locks.py)"
    fig.suptitle(f"{heading}; mutual-exclusion violations: {violations}", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("source", nargs="?", default="-", help="bench/locks.py --json output [- = stdin]")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT, help=f"PNG to write [{DEFAULT_OUT}]")
    parser.add_argument("--title", default="", help="heading above the panels (say the machine)")
    args = parser.parse_args(argv)
    data = load(args.source)
    plot(data, args.output, title=args.title)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
