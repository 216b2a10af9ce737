"""``marathon status RUN_DIR``: a table of a run's trials from its manifest and records."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from benchmark.manifest import read_manifest
from benchmark.records import TrialRow, read_table
from benchmark.rundir import live_status, resume_hint


def status_table(run_dir: Path) -> tuple[Table, str]:
    """The trials of a run as a rich table, and a summary: one line with the run's live
    status (:func:`benchmark.rundir.live_status`: ``running``, ``dead``, ``complete``,
    ``interrupted``, ``failed`` with its reason), and a second line saying how to resume it
    when it is resumable.

    Each row (one per trial; arm, agent, model, effort and replicate identify it): episodes
    done/planned, attempts, recovery attempts, last episode score, final score,
    status.

    Raises:
        MarathonError: ``run_dir`` is not a run directory, or its manifest or
            ``trials.parquet`` is unreadable (the message names the file).
    """
    manifest = read_manifest(run_dir)
    rows = [TrialRow(**r) for r in read_table(run_dir, "trials").to_pylist()]
    by_id = {r.trial_id: r for r in rows}
    table = Table(title=f"run {manifest.run_id} ({manifest.marathon})")
    for col in ("arm", "agent", "model", "effort", "rep", "episodes", "attempts", "recovery",
                "last score", "final score", "status"):
        numeric = col not in ("arm", "agent", "model", "effort", "status")
        table.add_column(col, justify="right" if numeric else "left", no_wrap=True)
    n_episodes = len(manifest.episodes)
    complete = 0
    for keys in manifest.trials:
        r = by_id.get(keys.trial_id)
        done = r.episodes_done if r else 0
        complete += done == n_episodes
        last = "" if not r or r.last_score is None else f"{r.last_score:.0%}"
        final = "" if not r or r.final_score is None else f"{r.final_score:.0%}"
        table.add_row(keys.arm, keys.agent, keys.model, keys.effort, str(keys.replicate),
                      f"{done}/{n_episodes}", str(r.attempts if r else 0),
                      str(r.recovery_attempts if r else 0), last, final,
                      "complete" if done == n_episodes else "incomplete")
    simulated = " (simulated models)" if manifest.simulated else ""
    state = live_status(run_dir, manifest.status)
    why = {"dead": " (no driver holds the run's lock: it was killed)",
           "failed": f" ({manifest.reason})" if manifest.reason else ""}.get(state, "")
    summary = (f"{manifest.run_id}: {state}{why}{simulated}; {complete}/{len(manifest.trials)} "
               f"trials complete; {len(manifest.sessions)} session(s)")
    hint = resume_hint(run_dir, state)
    return table, summary + (f"\n{hint}" if hint else "")
