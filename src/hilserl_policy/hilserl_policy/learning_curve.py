"""Learning-curve plot: evaluation success rate (and episode length) against env steps."""

from __future__ import annotations

from pathlib import Path


def write_learning_curve(path: str | Path, curve: list[dict], title: str = "",
                         target: float | None = 0.95, metric: str = "success") -> None:
    """PNG of ``curve`` (dicts with env_steps, success_rate, mean_length and, for
    ``metric="return"``, mean_return), off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["env_steps"] for p in curve]
    fig, success_axis = plt.subplots(figsize=(7, 4), dpi=100)
    if metric == "return":
        success_axis.plot(steps, [p["mean_return"] for p in curve], "o-", color="tab:blue",
                          label="mean return (deterministic evaluation)")
        success_axis.set_ylabel("mean episode return")
    else:
        success_axis.plot(steps, [100 * p["success_rate"] for p in curve], "o-", color="tab:blue",
                          label="success (deterministic evaluation)")
        if target is not None:
            success_axis.axhline(100 * target, color="tab:gray", linestyle=":", label=f"{target:.0%}")
        success_axis.set_ylabel("success rate (%)")
        success_axis.set_ylim(-2, 102)
    success_axis.set_xlabel("env steps")
    success_axis.grid(alpha=0.3)
    length_axis = success_axis.twinx()
    length_axis.plot(steps, [p["mean_length"] for p in curve], "s--", color="tab:orange", alpha=0.6,
                     label="mean episode length")
    length_axis.set_ylabel("mean episode length (steps)")
    lines = success_axis.get_legend_handles_labels()
    more = length_axis.get_legend_handles_labels()
    success_axis.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)
    if title:
        success_axis.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
