"""The ``governed`` controller: re-score after every attempt, tell new failures from
regressions, repair or roll back by a fixed rule, keep a capsule and an evidence ledger.

The rule (also in ``docs/arms.md``; the rule ids are recorded with every decision). After
attempt ``k`` of an episode is scored against every active gate, its failing gates are split
into *regressed* (green at the end of an earlier episode of this trial), *new* (activated by
this episode) and *carried* (older gates never green at an episode's end). Then the first rule
that applies decides:

- **R1** every active gate is green: ``accept``; the commit becomes the last all-green commit.
- **R2** the episode's or the trial's token or USD budget is reached: ``stop_budget``.
- **R3** ``k`` equals the arm's ``max_attempts``: ``stop_attempts``.
- **R4** a gate regressed after attempt ``k`` was already regressed after attempt ``k-1``,
  attempt ``k`` was a repair attempt, and the trial has a last all-green commit: ``rollback``:
  reset the workspace to that commit (``git reset --hard``, ``git clean -fdx``), then retry the
  episode's brief with the contract and the lesson (which gate broke, which contract item it
  protects, that the repair did not fix it).
- **R5** otherwise: ``repair``: re-prompt on the same workspace (same agent session) with the
  failing gates (regressions first, each with the contract item it protects; then new and
  carried failures; check names, plus first failure messages at feedback level ``messages``)
  and the contract.

An episode ends on its last attempt's workspace. At an episode's start the agent gets the brief
plus the contract of the earlier episodes and the open regressions.

The capsule (:mod:`benchmark.capsule`) and the evidence ledger (:mod:`benchmark.evidence`) live
in the run directory, never in the workspace. Each step appends its event to the ledger first,
then saves the capsule; on the first episode a driver session runs for the trial, an existing
ledger or capsule means the trial is resumed: the capsule is rewound to the episode the driver
restarts (its earlier state is kept under ``abandoned``) and a ``resumed`` event is written.
"""

from __future__ import annotations

import hashlib

from benchmark.agents.base import Agent
from benchmark.budget import Spend, attempt_spend
from benchmark.capsule import (AttemptKind, AttemptLog, Capsule, ContractItem, EpisodeState,
                               Regression, acceptance_criteria, capsule_path)
from benchmark.controllers.base import (Attempt, Controller, Decision, ScoreFn, TrialContext,
                                        gate_verdicts)
from benchmark.errors import MarathonError
from benchmark.evidence import EvidenceLedger, evidence_path, read_evidence, utcnow
from benchmark.marathon import EpisodeSpec
from benchmark.scorer import CheckResult, Outcome


def _check_lines(checks: list[CheckResult], gate: str, level: str) -> list[str]:
    """Bullet lines of the failing checks of one gate (names; first message line at
    ``messages``)."""
    out = []
    for c in checks:
        if c.gate != gate or c.outcome == Outcome.passed:
            continue
        if level == "messages" and c.message:
            out.append(f"  - `{c.check}` ({c.outcome.value}): {c.message.splitlines()[0]}")
        else:
            out.append(f"  - `{c.check}` ({c.outcome.value})")
    return out


def contract_text(items: list[ContractItem]) -> str:
    """The product contract as Markdown (one section per episode), or ``""`` when empty."""
    if not items:
        return ""
    parts = ["## Product contract", "",
             "Everything below was asked for in earlier episodes (or this one) and still applies.", ""]
    for item in items:
        parts += [f"### {item.episode}: {item.title}", "", item.criteria, ""]
    return "\n".join(parts).rstrip() + "\n"


def _regression_lines(regressions: list[Regression], contract: list[ContractItem],
                      now: str = "fails now") -> list[str]:
    titles = {c.episode: c.title for c in contract}
    return [f"- gate `{r.gate}` (protects contract item {r.protects}: "
            f"{titles.get(r.protects, r.protects)}) was green at the end of episode "
            f"{r.green_at_end_of} and {now}." for r in regressions]


def start_prompt(brief: str, earlier: list[ContractItem], open_regressions: list[Regression],
                 contract: list[ContractItem]) -> str:
    """The prompt of an episode's first attempt: the brief, the contract of earlier episodes and
    the open regressions."""
    parts = [brief.rstrip() + "\n"]
    if earlier:
        parts.append(contract_text(earlier))
    if open_regressions:
        parts.append("\n".join(["## Open regressions", "",
                                "These worked at the end of an earlier episode and fail now; "
                                "repair them as part of this episode:",
                                *_regression_lines(open_regressions, contract)]) + "\n")
    return "\n".join(parts)


def repair_prompt(log: AttemptLog, checks: list[CheckResult], regressions: list[Regression],
                  contract: list[ContractItem], level: str, brief: str | None) -> str:
    """The re-prompt of rule R5: the failing gates classified, the contract, and the brief when
    the agent does not keep its session."""
    lines = ["Your work was checked by hidden gates after your last attempt, and some of them fail.",
             "Fix the workspace so that they pass, without breaking anything that works now.", ""]
    by_gate = {r.gate: r for r in regressions}
    if log.regressed:
        lines += ["Regressions (these worked at the end of an earlier episode):"]
        for g in log.regressed:
            lines += _regression_lines([by_gate[g]], contract) if g in by_gate else [f"- gate `{g}`"]
            lines += _check_lines(checks, g, level)
        lines.append("")
    if log.new_failing:
        lines += ["Failing gates of this episode:"]
        for g in log.new_failing:
            lines += [f"- gate `{g}`:", *_check_lines(checks, g, level)]
        lines.append("")
    if log.carried_failing:
        lines += ["Failing gates of earlier episodes (never green yet):"]
        for g in log.carried_failing:
            lines += [f"- gate `{g}`:", *_check_lines(checks, g, level)]
        lines.append("")
    text = "\n".join(lines) + "\n" + contract_text(contract)
    if brief is not None:
        text += "\nThe brief of this episode, again:\n\n" + brief
    return text


def rollback_prompt(brief: str, log: AttemptLog, checks: list[CheckResult],
                    regressions: list[Regression], contract: list[ContractItem], level: str,
                    commit: str, green_episode: str) -> str:
    """The prompt after a rollback (rule R4): what happened, the lesson, the brief, the
    contract."""
    survived = [r for r in regressions if r.gate in log.regressed]
    lines = [f"The workspace was rolled back to commit {commit[:12]}, the last state in which every "
             f"hidden gate passed (the end of episode {green_episode}). Everything changed since "
             "then is gone.", "",
             "Lesson: your changes in this episode broke behaviour that earlier episodes required, "
             "and a repair attempt did not fix it:",
             *_regression_lines(survived, contract, f"failed after attempt {log.attempt}")]
    for r in survived:
        lines += _check_lines(checks, r.gate, level)
    lines += ["", "Do the work again, keeping every item of the contract below working.", "",
              "The brief:", "", brief.rstrip(), ""]
    return "\n".join(lines) + "\n" + contract_text(contract)


class GovernedController(Controller):
    """The governed recovery runtime: capsule, re-score loop with rules R1-R5, rollback,
    budgets, evidence ledger, resume."""

    name = "governed"
    multi_attempt = True
    enforces_budget = True

    def __init__(self, arm):
        super().__init__(arm)
        self.capsule: Capsule | None = None
        """The trial's capsule, loaded on the first episode of this driver session."""
        self.ledger: EvidenceLedger | None = None
        """The trial's evidence ledger."""
        self._capsule_path = None

    # -- set-up and resume --------------------------------------------------------------------

    def _open(self, trial: TrialContext, index: int, episode: EpisodeSpec) -> None:
        """Open the capsule and the ledger on the first episode of this session; on a resume,
        rewind the capsule to ``index`` (1-based) and write a ``resumed`` event."""
        if self.capsule is not None:
            return
        keys = trial.keys
        self._capsule_path = capsule_path(trial.run_dir, keys.trial_id)
        ledger = EvidenceLedger(evidence_path(trial.run_dir, keys.trial_id), keys.trial_id)
        capsule = Capsule.load(self._capsule_path)
        if ledger.existed or capsule is not None:
            session = ledger.start_session()
            capsule = capsule or Capsule.new(keys.trial_id, trial.marathon.name, self.arm.name)
            dropped = capsule.rewind(index)
            capsule.sessions = session
            # The ledger is the truth about spend: every scored attempt, also the abandoned ones.
            events = read_evidence(ledger.path)
            scored = [e for e in events if e.kind == "scored"]
            capsule.trial_spend = Spend(
                tokens=sum(e.tokens or 0 for e in scored), usd=sum(e.usd or 0.0 for e in scored),
                calls=sum(e.data.get("calls", 0) for e in scored),
                calls_without_cost=sum(e.data.get("calls_without_cost", 0) for e in scored))
            lost = ", ".join(f"{e.episode} ({len(e.attempts)} scored attempts)" for e in dropped)
            ledger.append(
                "resumed", episode=episode.id, trial_tokens=capsule.trial_spend.tokens,
                trial_usd=capsule.trial_spend.usd,
                detail=(f"driver session {session} restarts the trial at episode {episode.id}, "
                        f"attempt 1, from the workspace of the last recorded episode; "
                        f"{ledger.last_seq} earlier events kept"
                        + (f"; abandoned: {lost}" if lost else "")),
                data={"abandoned": [e.episode for e in dropped],
                      "dropped_torn_bytes": ledger.dropped_bytes,
                      "last_green_commit": capsule.last_green_commit,
                      "open_regressions": [r.gate for r in capsule.open_regressions]})
        else:
            capsule = Capsule.new(keys.trial_id, trial.marathon.name, self.arm.name)
            ledger.append("trial_started", detail=f"governed trial of arm {self.arm.name}",
                          data={"max_attempts": self.arm.max_attempts, "feedback": self.arm.feedback,
                                "session_continuity": self.arm.session_continuity,
                                "budget": self.arm.budget.model_dump() if self.arm.budget else None})
        self.capsule, self.ledger = capsule, ledger
        self._save()

    def _save(self) -> None:
        assert self.capsule is not None
        self.capsule.save(self._capsule_path)

    # -- the loop -----------------------------------------------------------------------------

    def run(self, trial: TrialContext, episode: EpisodeSpec, brief: str, agent: Agent,
            score: ScoreFn) -> list[Attempt]:
        """Play one episode under rules R1-R5 (module docstring) and return its attempts.

        Raises:
            Whatever the agent, ``score`` or the sandbox raise for harness failures; a failed
            rollback (broken repository) falls back to a repair (rule R4 then records why).
        """
        marathon = trial.marathon
        index = marathon.episode_ids.index(episode.id) + 1
        self._open(trial, index, episode)
        cap, ledger = self.capsule, self.ledger
        assert cap is not None and ledger is not None
        activated = [g.name for g in marathon.gate if g.active_from == episode.id]
        earlier = list(cap.contract)
        cap.contract.append(ContractItem(episode=episode.id, title=episode.title,
                                         criteria=acceptance_criteria(brief), gates=activated))
        start_commit = trial.sandbox.head()
        if trial.keys.mode == "isolated" and index > 1 and start_commit:
            # The episode starts from the previous episode's reference (green by construction):
            # a rollback returns there, never to the agent's own earlier workspace.
            cap.last_green_commit = start_commit
            cap.last_green_episode = marathon.episode_ids[index - 2]
        cap.episodes.append(EpisodeState(episode=episode.id, index=index, status="in_progress",
                                         started_at=utcnow(), start_commit=start_commit))
        ledger.append("episode_started", episode=episode.id, snapshot=start_commit,
                      detail=f"episode {index} of {len(marathon.episodes)}: {episode.title}",
                      data={"contract_items": [c.episode for c in cap.contract],
                            "open_regressions": [r.gate for r in cap.open_regressions],
                            "last_green_commit": cap.last_green_commit})
        self._save()

        prompt = start_prompt(brief, earlier, cap.open_regressions, cap.contract)
        kind: AttemptKind = "first"
        attempts: list[Attempt] = []
        while True:
            number = len(attempts) + 1
            ledger.append("attempt_started", episode=episode.id, attempt=number,
                          data={"kind": kind,
                                "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
                                "prompt_chars": len(prompt)})
            a = self.attempt(trial, episode, agent, score, number, prompt)
            a.rolled_back = kind == "retry_after_rollback"
            attempts.append(a)
            log = self._after_attempt(trial, episode, a, kind, activated)
            ep = cap.current
            if log.decision == "rollback":
                target, green_ep = cap.last_green_commit, cap.last_green_episode
                assert target is not None and green_ep is not None
                try:
                    trial.rollback(target)
                except MarathonError as e:  # the agent broke the repository: repair instead
                    log.decision, log.rule = "repair", "R4"
                    log.reason = f"rollback to {target[:12]} failed ({e}); repairing instead"
                    a.decision = "repair"
                    ledger.append("decision", episode=episode.id, attempt=number, action="repair",
                                  rule="R4", detail=log.reason)
                else:
                    ep.rollbacks += 1
                    ledger.append("rollback", episode=episode.id, attempt=number, snapshot=target,
                                  detail=f"workspace reset from {(log.commit or 'none')[:12]} to "
                                         f"{target[:12]} (end of episode {green_ep}, all green)",
                                  data={"from": log.commit, "rollbacks_in_episode": ep.rollbacks})
                    self._save()
                    prompt = rollback_prompt(brief, log, a.checks, cap.open_regressions,
                                             cap.contract, self.arm.feedback, target, green_ep)
                    kind = "retry_after_rollback"
                    continue
            if log.decision == "repair":
                self._save()
                prompt = repair_prompt(log, a.checks, cap.open_regressions, cap.contract,
                                       self.arm.feedback,
                                       None if self.arm.session_continuity else brief)
                kind = "repair"
                continue
            self._end_episode(episode, a, log)
            return attempts

    def _after_attempt(self, trial: TrialContext, episode: EpisodeSpec, a: Attempt,
                       kind: AttemptKind, activated: list[str]) -> AttemptLog:
        """Record the scoring, the regressions found or repaired and the decision (R1-R5)."""
        cap, ledger = self.capsule, self.ledger
        ep = cap.current
        commit, sha = trial.snapshot_of(a.number)
        verdicts = gate_verdicts(a.checks)
        spend = attempt_spend(a.result.usage)
        ep.spend = ep.spend.plus(spend)
        cap.trial_spend = cap.trial_spend.plus(spend)
        ledger.append("scored", episode=episode.id, attempt=a.number, snapshot=commit,
                      snapshot_sha256=sha, gates=verdicts, score=a.score, tokens=spend.tokens,
                      usd=spend.usd, episode_tokens=ep.spend.tokens, episode_usd=ep.spend.usd,
                      trial_tokens=cap.trial_spend.tokens, trial_usd=cap.trial_spend.usd,
                      detail=f"{sum(verdicts.values())}/{len(verdicts)} gates green; "
                             f"agent outcome {a.result.outcome.value}",
                      data={"failing_checks": [f"{c.gate}::{c.check}" for c in a.checks
                                               if c.outcome != Outcome.passed],
                            "calls": spend.calls, "calls_without_cost": spend.calls_without_cost})
        failing = [g for g, ok in verdicts.items() if not ok]
        regressed, new, carried = [], [], []
        for g in failing:
            if g in activated:
                new.append(g)
            elif cap.green_at_end_of(g):
                regressed.append(g)
            else:
                carried.append(g)
        open_by_gate = {r.gate: r for r in cap.open_regressions}
        for g in regressed:
            if g not in open_by_gate:
                protects = next(x.active_from for x in trial.marathon.gate if x.name == g)
                reg = Regression(gate=g, protects=protects, green_at_end_of=cap.green_at_end_of(g),
                                 found_in=episode.id, found_at_attempt=a.number)
                cap.open_regressions.append(reg)
                ledger.append("regression_found", episode=episode.id, attempt=a.number, gate=g,
                              snapshot=commit,
                              detail=f"gate {g} was green at the end of episode "
                                     f"{reg.green_at_end_of} and fails after attempt {a.number}",
                              data={"protects": protects})
        for r in list(cap.open_regressions):
            if verdicts.get(r.gate):
                cap.open_regressions.remove(r)
                ledger.append("regression_repaired", episode=episode.id, attempt=a.number,
                              gate=r.gate, snapshot=commit,
                              detail=f"gate {r.gate} (regressed in {r.found_in}, attempt "
                                     f"{r.found_at_attempt}) is green again")

        decision, rule, reason = self._decide(a, kind, regressed, new, carried)
        log = AttemptLog(attempt=a.number, kind=kind, commit=commit, snapshot_sha256=sha,
                         gates=verdicts, score=a.score, spend=spend, regressed=regressed,
                         new_failing=new, carried_failing=carried, decision=decision, rule=rule,
                         reason=reason, at=utcnow())
        ep.attempts.append(log)
        a.decision = decision
        ledger.append("decision", episode=episode.id, attempt=a.number, action=decision,
                      rule=rule, detail=reason,
                      data={"regressed": regressed, "new_failing": new, "carried_failing": carried})
        if decision == "stop_budget":
            ledger.append("budget_hit", episode=episode.id, attempt=a.number,
                          episode_tokens=ep.spend.tokens, episode_usd=ep.spend.usd,
                          trial_tokens=cap.trial_spend.tokens, trial_usd=cap.trial_spend.usd,
                          detail=reason)
        return log

    def _decide(self, a: Attempt, kind: AttemptKind, regressed: list[str], new: list[str],
                carried: list[str]) -> tuple[Decision, str, str]:
        """Rules R1-R5 (module docstring): ``(decision, rule id, reason)``."""
        cap = self.capsule
        ep = cap.current
        if a.green:
            return "accept", "R1", f"every active gate is green after attempt {a.number}"
        budget = self.arm.budget
        hit = budget.reached(ep.spend, cap.trial_spend) if budget else None
        if hit:
            return "stop_budget", "R2", f"budget {hit} reached after attempt {a.number}"
        if a.number >= self.arm.max_attempts:
            return ("stop_attempts", "R3",
                    f"attempt {a.number} of {self.arm.max_attempts} is red: no attempt left")
        prev = ep.attempts[-1] if ep.attempts else None
        survived = [g for g in regressed if prev is not None and g in prev.regressed]
        if survived and kind == "repair":
            if cap.last_green_commit:
                return ("rollback", "R4",
                        f"regression of {', '.join(survived)} survived repair attempt {a.number}: "
                        f"roll back to {cap.last_green_commit[:12]} (end of "
                        f"{cap.last_green_episode}) and retry")
            why = (f"regression of {', '.join(survived)} survived repair attempt {a.number}, "
                   "but no episode ended all green yet: nothing to roll back to; repair")
            return "repair", "R4", why
        what = []
        if regressed:
            what.append(f"regressed: {', '.join(regressed)}")
        if new:
            what.append(f"new failing: {', '.join(new)}")
        if carried:
            what.append(f"carried failing: {', '.join(carried)}")
        return "repair", "R5", f"attempt {a.number} is red ({'; '.join(what)}): repair"

    def _end_episode(self, episode: EpisodeSpec, a: Attempt, log: AttemptLog) -> None:
        """Close the episode in the capsule and the ledger (``accepted`` or
        ``episode_stopped``)."""
        cap, ledger = self.capsule, self.ledger
        ep = cap.current
        ep.status = "accepted" if log.decision == "accept" else "stopped"
        ep.ended_at = utcnow()
        ep.final_gates = log.gates
        ep.final_commit = log.commit
        ep.end_reason = log.reason
        ep.open_regressions_at_end = list(cap.open_regressions)
        if log.decision == "accept":
            if log.commit:
                cap.last_green_commit, cap.last_green_episode = log.commit, episode.id
            ledger.append("accepted", episode=episode.id, attempt=a.number, snapshot=log.commit,
                          gates=log.gates, score=a.score,
                          episode_tokens=ep.spend.tokens, episode_usd=ep.spend.usd,
                          detail=(f"accepted after attempt {a.number} ({ep.rollbacks} "
                                  f"rollback{'' if ep.rollbacks == 1 else 's'}): "
                                  f"all {len(log.gates)} active gates green on commit "
                                  f"{(log.commit or 'none')[:12]}; rule R1"),
                          data={"rollbacks": ep.rollbacks})
        else:
            ledger.append("episode_stopped", episode=episode.id, attempt=a.number,
                          snapshot=log.commit, gates=log.gates, score=a.score,
                          episode_tokens=ep.spend.tokens, episode_usd=ep.spend.usd,
                          detail=f"episode ends red: {log.reason} (rule {log.rule})",
                          data={"rollbacks": ep.rollbacks, "decision": log.decision,
                                "open_regressions": [r.gate for r in cap.open_regressions]})
        self._save()
