"""Progress displays: :class:`LiveProgress` for ``marathon run`` (one line per trial with its
episode, attempt, phase and last score: a rich live table on a terminal, one printed line per
finished episode otherwise), and :class:`CountProgress` for ``marathon validate`` and
``marathon mutate`` (a bar of finished scorings)."""

from __future__ import annotations

import threading

from pydantic import BaseModel
from rich.console import Console
from rich.live import Live
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from benchmark.records import TrialKeys


class TrialProgress(BaseModel):
    """Where one trial stands."""

    trial_id: str
    """Id of the trial."""
    episodes_total: int
    """Episodes of the marathon."""
    episodes_done: int = 0
    """Finished episodes."""
    episode: str = ""
    """Current episode id."""
    attempt: int = 0
    """Current attempt number."""
    phase: str = "queued"
    """``queued``, ``starting``, ``agent``, ``scoring``, ``done``, ``interrupted`` or
    ``failed: <reason>``."""
    last_score: float | None = None
    """Score of the last finished episode (0..1)."""
    node: str = ""
    """Where the trial runs: empty in the driver's process, else the cluster node (a Ray run)."""


class LiveProgress:
    """Thread-safe progress of a run's trials, shown while the run goes on.

    With ``live`` and a terminal, a rich live table; otherwise one printed line per finished
    episode and per failed trial. Use as a context manager; trials call :meth:`update` and
    :meth:`episode_done`.
    """

    def __init__(self, trials: list[TrialKeys], episodes_total: int | dict[str, int],
                 done: dict[str, int], last_scores: dict[str, float],
                 console: Console | None = None, live: bool = True):
        """``episodes_total``: episodes of every trial, or trial id -> its episodes (a run of
        several marathons)."""
        self.console = console or Console(stderr=True, highlight=False)
        """Where the display goes (stderr by default)."""
        self._lock = threading.Lock()
        total = (episodes_total if isinstance(episodes_total, dict)
                 else {t.trial_id: episodes_total for t in trials})
        self._trials = {
            t.trial_id: TrialProgress(trial_id=t.trial_id, episodes_total=total[t.trial_id],
                                      episodes_done=done.get(t.trial_id, 0),
                                      last_score=last_scores.get(t.trial_id),
                                      phase="done" if done.get(t.trial_id, 0) == total[t.trial_id] else "queued")
            for t in trials
        }
        self._live = Live(get_renderable=self.render, console=self.console, refresh_per_second=4,
                          transient=False) if live and self.console.is_terminal else None

    def __enter__(self) -> "LiveProgress":
        if self._live:
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live:
            self._live.stop()

    def update(self, trial_id: str, **changes) -> None:
        """Change fields of a trial's :class:`TrialProgress`."""
        with self._lock:
            p = self._trials[trial_id]
            self._trials[trial_id] = p.model_copy(update=changes)
        if changes.get("phase", "").startswith("failed") and not self._live:
            self.console.print(f"{trial_id}: {changes['phase']}")

    def episode_done(self, trial_id: str, episode: str, score: float, attempts: int) -> None:
        """Record a finished episode (printed as one line when there is no live display)."""
        with self._lock:
            p = self._trials[trial_id]
            done = p.episodes_done + 1
            self._trials[trial_id] = p.model_copy(update={
                "episodes_done": done, "last_score": score,
                "phase": "done" if done == p.episodes_total else "next episode"})
        if not self._live:
            where = f" on {p.node}" if p.node else ""
            self.console.print(f"{trial_id} {episode}: score {score:.0%} after {attempts} "
                               f"attempt(s){where}")

    def render(self) -> Table:
        """The progress table."""
        table = Table(title="marathon run", expand=False)
        with self._lock:
            rows = list(self._trials.values())
        nodes = any(p.node for p in rows)  # a Ray run: the node column
        for col in ("trial", *(("node",) if nodes else ()), "episodes", "episode", "attempt",
                    "phase", "last score"):
            table.add_column(col, justify="right" if col in ("episodes", "attempt", "last score") else "left")
        for p in rows:
            score = "" if p.last_score is None else f"{p.last_score:.0%}"
            table.add_row(p.trial_id, *((p.node,) if nodes else ()),
                          f"{p.episodes_done}/{p.episodes_total}", p.episode,
                          str(p.attempt or ""), p.phase, score)
        return table


class CountProgress:
    """Thread-safe progress of ``total`` items (e.g. scorings): a rich bar with the count, elapsed
    time and an estimate of the time left on a terminal; otherwise (not a terminal, or ``live``
    false) a plain count line every 10% of the items, unless ``counts`` is false (the caller
    prints its own line per item). :meth:`note` prints a line above the bar either way. Use as a
    context manager."""

    def __init__(self, description: str, total: int, console: Console | None = None,
                 live: bool = True, counts: bool = True):
        self.console = console or Console(stderr=True, highlight=False)
        """Where the display goes (stderr by default)."""
        self._description = description
        self._total = total
        self._done = 0
        self._counts = counts
        self._lock = threading.Lock()
        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=self.console, transient=False,
        ) if live and self.console.is_terminal else None
        self._task = self._bar.add_task(description, total=total) if self._bar else None

    def __enter__(self) -> "CountProgress":
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar:
            self._bar.stop()

    @property
    def is_live(self) -> bool:
        """Whether a live bar is shown (a terminal and ``live``)."""
        return self._bar is not None

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items as finished."""
        with self._lock:
            before, self._done = self._done, self._done + n
        if self._bar:
            self._bar.advance(self._task, n)
        elif self._counts and self._total and (self._done * 10 // self._total > before * 10 // self._total
                              or self._done == self._total):
            self.console.print(f"{self._description}: {self._done}/{self._total}")

    def note(self, line: str) -> None:
        """Print one line (above the bar on a terminal)."""
        self.console.print(line)
