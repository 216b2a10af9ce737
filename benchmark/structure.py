"""What is left to write in a marathon: findings read from its files alone, before any scoring.

``marathon validate`` reports these first (they take milliseconds and need no Docker):

- **placeholders**: every part that still holds :data:`PLACEHOLDER` (the marker ``marathon
  new`` leaves in each file an author has to write), named by role: ``marathon.toml``,
  ``DESIGN.md`` (with its sections), ``starter``, ``brief e1``, ``reference e1``, ``gate X``,
  other files by their path (``gates/NAME/_model.py``). A marathon with placeholders is not scored: a placeholder
  reference or brief says nothing about the gates;
- every gate has at least :data:`MIN_CHECKS_PER_GATE` checks, each tagged ``genuine`` or
  ``contract``, and at least :data:`MIN_MUTANTS_PER_GATE` hand-written mutants
  (``<mutants>/<gate>/*.patch``; a patch anywhere else under ``<mutants>`` is a finding);
- ``DESIGN.md`` exists; its gate list (the tables of ``## Gates``) has a row for every gate;
  the mutants' ``README.md`` names every hand-written mutant (`` `name` ``); DESIGN.md's
  **Traps** table (a ``## Traps`` section: ``| episode | trap |
  gates it breaks |``) has a row for every episode after the first (a marathon needs such
  episodes) and each row names a gate of the marathon (after its first column);
- its **Traceability** table (a ``## Traceability`` section: ``| rule | genuine checks |``)
  names, after the first column of every row, at least one genuine check (`` `test_name` ``) of
  the marathon and only genuine checks, and every genuine check appears in some row;
- a TypeScript product (``[mutation] language = "typescript"``) declares ``[runtime] node``.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from benchmark.marathon import JUNK_DIRS, Marathon
from benchmark.scorer import CheckSpec, list_checks

#: The marker ``marathon new`` leaves in every part an author still has to write.
PLACEHOLDER = "TODO(marathon new)"

MIN_CHECKS_PER_GATE = 3
MIN_MUTANTS_PER_GATE = 2

#: Directories never searched for placeholders (tool caches, installed packages).
SKIP_DIRS = JUNK_DIRS | {"node_modules", ".git"}


class Finding(BaseModel):
    """One validation item: what was checked, whether it held, and why not."""

    item: str
    """What was checked, e.g. ``reference e2 passes its active gates`` or
    ``mutant privacy/raw_rejects fails its gate``."""
    ok: bool
    """Whether the expectation held (for a scored item: on every seed)."""
    detail: str = ""
    """Outcome summary, e.g. ``14/14 checks passed on seeds 0, 1, 2``, or what is left to do."""


class Structure(BaseModel):
    """The findings of :func:`structure` and the parts still holding a placeholder."""

    findings: list[Finding]
    """Every structural finding, in report order."""
    placeholders: list[str]
    """Roles still holding :data:`PLACEHOLDER`, e.g. ``["DESIGN.md", "reference e1"]``."""

    @property
    def scorable(self) -> bool:
        """True when no part is a placeholder, so scoring the references, starter and mutants
        means something."""
        return not self.placeholders


def _count(n: int, noun: str) -> str:
    """``1 gate``, ``3 gates``."""
    return f"{n} {noun}{'s' * (n != 1)}"


def _files(base: Path) -> list[Path]:
    return sorted(p for p in base.rglob("*")
                  if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(base).parts))


def _shown(m: Marathon, path: Path) -> str:
    """A path of the marathon as ``episodes/NAME/rest`` or ``gates/NAME/rest`` (from the
    directory above the marathon's or the gates' directory); other paths in full."""
    for base in (m.root, m.gates, *([m.mutants] if m.mutants else [])):
        if path.is_relative_to(base):
            return (Path(base.parent.name) / base.name / path.relative_to(base)).as_posix()
    return str(path)


def _role(m: Marathon, path: Path) -> tuple[int, str]:
    """(report rank, role) of a marathon or gate file."""
    if path == m.root / "marathon.toml":
        return 0, "marathon.toml"
    if path == m.root / "DESIGN.md":
        return 1, "DESIGN.md"
    if path.is_relative_to(m.starter):
        return 2, "starter"
    for i, e in enumerate(m.episodes):
        if path == e.brief:
            return 3 + 2 * i, f"brief {e.id}"
        if path.is_relative_to(e.reference):
            return 4 + 2 * i, f"reference {e.id}"
    rank = 4 + 2 * len(m.episodes)
    for g in m.gate:
        if path == m.gates / g.filename:
            return rank, f"gate {g.name}"
    return rank + 1, _shown(m, path)


def _sections_with(text: str, needle: str) -> list[str]:
    """Headings of the Markdown sections whose own lines hold ``needle`` (document order)."""
    found: list[str] = []
    heading = "(before the first heading)"
    for line in text.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            heading = match.group(1).strip()
        elif needle in line and heading not in found:
            found.append(heading)
    return found


def placeholder_findings(m: Marathon) -> tuple[list[Finding], list[str]]:
    """One failed finding per role still holding :data:`PLACEHOLDER` (files named), or one
    passed finding; and the list of those roles."""
    marker = PLACEHOLDER.encode("utf-8")
    bases = [m.root, m.gates] + ([m.mutants] if m.mutants and not m.mutants.is_relative_to(m.gates) else [])
    holders: dict[tuple[int, str], list[Path]] = {}
    for base in bases:
        for path in _files(base):
            if marker in path.read_bytes():
                holders.setdefault(_role(m, path), []).append(path)
    findings = []
    for (_, role), paths in sorted(holders.items()):
        if role == "DESIGN.md":
            sections = _sections_with(paths[0].read_text(encoding="utf-8", errors="replace"), PLACEHOLDER)
            detail = f"{PLACEHOLDER} left in sections: {'; '.join(sections)}"
        else:
            detail = f"{PLACEHOLDER} left in {', '.join(_shown(m, p) for p in paths)}"
        findings.append(Finding(item=f"{role} is written", ok=False, detail=detail))
    if not findings:
        findings.append(Finding(item="no placeholder left", ok=True, detail=f"no file holds {PLACEHOLDER}"))
    return findings, [role for _, role in sorted(holders)]


def gate_findings(m: Marathon, checks: list[CheckSpec]) -> list[Finding]:
    """Per gate: enough tagged checks, enough hand-written mutants."""
    findings = []
    for gate in m.gate:
        mine = [c for c in checks if c.gate == gate.name]
        untagged = [c.check for c in mine if c.tag is None]
        missing = MIN_CHECKS_PER_GATE - len(mine)
        parts = [_count(len(mine), "check")
                 + (f" ({', '.join(c.check for c in mine)})" if 0 < len(mine) < MIN_CHECKS_PER_GATE else "")]
        if missing > 0:
            parts.append(f"{missing} more to write")
        if untagged:
            parts.append(f"untagged: {', '.join(untagged)}")
        findings.append(Finding(
            item=f"gate {gate.name} has at least {MIN_CHECKS_PER_GATE} checks, each tagged genuine or contract",
            ok=missing <= 0 and not untagged, detail="; ".join(parts)))
    for gate in m.gate:
        folder = m.mutants / gate.name if m.mutants else None
        n = len(list(folder.glob("*.patch"))) if folder else 0
        if folder is None:
            detail = "no mutants directory (mutants = \"...\" in marathon.toml)"
        else:
            detail = f"{n if n else 'none'} in {_shown(m, folder)}/"
            if n < MIN_MUTANTS_PER_GATE:
                detail += f"; {MIN_MUTANTS_PER_GATE - n} more to write"
        findings.append(Finding(item=f"gate {gate.name} has at least {MIN_MUTANTS_PER_GATE} hand-written mutants",
                                ok=n >= MIN_MUTANTS_PER_GATE, detail=detail))
    if m.mutants is not None:
        names = {g.name for g in m.gate}
        stray = [p for p in sorted(m.mutants.rglob("*.patch"))
                 if p.parent.parent != m.mutants or p.parent.name not in names]
        if stray:
            findings.append(Finding(item="every hand-written mutant is filed under a gate", ok=False,
                                    detail="not in a <gate>/ folder of a gate of "
                                           f"{m.name}: {', '.join(_shown(m, p) for p in stray)}"))
    return findings


def section_rows(text: str, title: str) -> list[list[str]] | None:
    """Body rows (cells stripped) of the Markdown tables in the ``##`` section whose heading
    starts with ``title`` (case-insensitive); None if there is no such section. Header rows
    and separator rows are left out; ``\\|`` does not split a cell."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if re.match(r"##\s+" + re.escape(title), line, re.IGNORECASE)), None)
    if start is None:
        return None
    rows: list[list[str]] = []
    in_table = False
    for line in lines[start + 1:]:
        if re.match(r"#{1,2}\s", line):
            break
        if not line.strip().startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if not in_table:
            in_table = True  # the header row
            continue
        if cells and all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        rows.append(cells)
    return rows


def _design_text(m: Marathon) -> str | None:
    path = m.root / "DESIGN.md"
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def traps_finding(m: Marathon, design: str | None) -> Finding:
    """Every episode after the first has a trap row naming the gates it breaks."""
    item = "every episode after the first has a trap in DESIGN.md (## Traps)"
    if len(m.episodes) < 2:
        return Finding(item=item, ok=False,
                       detail=f"only {m.episode_ids[0]}: add episodes whose briefs tempt breaking an "
                              "earlier episode's gate, each trap in the Traps table")
    if design is None:
        return Finding(item=item, ok=False, detail="no DESIGN.md")
    rows = section_rows(design, "Traps")
    if rows is None:
        return Finding(item=item, ok=False, detail="DESIGN.md has no ## Traps section")
    gates = {g.name for g in m.gate}
    covered: set[str] = set()
    problems = []
    for cells in rows:
        if not cells:
            continue
        episodes = {t.lower() for t in re.findall(r"[A-Za-z0-9_-]+", cells[0])} & set(m.episode_ids)
        covered |= episodes
        if not gates & set(re.findall(r"[a-z][a-z0-9_]*", " ".join(cells[1:]))):
            problems.append(f"trap {(cells[1] if len(cells) > 1 else cells[0])[:60]!r} names no gate "
                            f"of {m.name}")
    missing = [e for e in m.episode_ids[1:] if e not in covered]
    if missing:
        problems.insert(0, f"no trap for {', '.join(missing)}")
    detail = "; ".join(problems) if problems else f"{_count(len(rows), 'trap')} for {', '.join(m.episode_ids[1:])}"
    return Finding(item=item, ok=not problems, detail=detail)


CHECK_NAME = re.compile(r"`(test_\w+)`")


def traceability_findings(m: Marathon, design: str | None, checks: list[CheckSpec]) -> list[Finding]:
    """Every traceability row names genuine checks only, at least one; every genuine check is
    traced."""
    item = "DESIGN.md traceability table lists a genuine check for every rule (## Traceability)"
    genuine = [c for c in checks if c.tag == "genuine"]
    genuine_names = {c.check for c in genuine}
    rows = None if design is None else section_rows(design, "Traceability")
    if rows is None:
        detail = "no DESIGN.md" if design is None else "DESIGN.md has no ## Traceability section"
        return [Finding(item=item, ok=False, detail=detail),
                Finding(item="every genuine check is traced to a rule in DESIGN.md", ok=False,
                        detail=f"{len(genuine)} genuine checks, no traceability table")]
    problems, traced = [], set()
    for cells in rows:
        if not cells:
            continue
        rule = cells[0]
        names = CHECK_NAME.findall(" ".join(cells[1:]))
        if not names:
            problems.append(f"no check for rule {rule!r}")
        unknown = [n for n in names if n not in genuine_names]
        if unknown:
            problems.append(f"rule {rule!r} names {', '.join(unknown)}: no genuine check of {m.name}")
        traced |= set(names)
    if not rows:
        problems.append("the table has no rows")
    untraced = [f"{c.gate}/{c.check}" for c in genuine if c.check not in traced]
    return [
        Finding(item=item, ok=not problems,
                detail="; ".join(problems) if problems else _count(len(rows), "rule")),
        Finding(item="every genuine check is traced to a rule in DESIGN.md", ok=not untraced,
                detail=f"untraced: {', '.join(untraced)}" if untraced
                else f"{_count(len(genuine), 'genuine check')} traced"),
    ]


def gate_list_finding(m: Marathon, design: str | None) -> Finding:
    """DESIGN.md's gate list (the tables of ``## Gates``) has a row for every gate."""
    item = "DESIGN.md gate list has a row for every gate (## Gates)"
    rows = None if design is None else section_rows(design, "Gates")
    if rows is None:
        return Finding(item=item, ok=False,
                       detail="no DESIGN.md" if design is None else "DESIGN.md has no ## Gates section")
    listed = {cells[0].strip("` ") for cells in rows if cells}
    missing = [g.name for g in m.gate if g.name not in listed]
    return Finding(item=item, ok=not missing,
                   detail=f"no row for gate {', '.join(missing)}" if missing else _count(len(m.gate), "gate"))


def mutants_readme_finding(m: Marathon) -> Finding:
    """The mutants' README names every hand-written mutant (`` `name` ``)."""
    item = "the mutants README lists every hand-written mutant"
    if m.mutants is None:
        return Finding(item=item, ok=False, detail="no mutants directory (mutants = \"...\" in marathon.toml)")
    patches = sorted(m.mutants.glob("*/*.patch"))
    readme = m.mutants / "README.md"
    if not readme.is_file():
        return Finding(item=item, ok=not patches,
                       detail=f"write {_shown(m, readme)}" if patches else "no mutants yet")
    text = readme.read_text(encoding="utf-8", errors="replace")
    unlisted = [f"{p.parent.name}/{p.stem}" for p in patches if f"`{p.stem}`" not in text]
    return Finding(item=item, ok=not unlisted,
                   detail=f"not in {_shown(m, readme)}: {', '.join(unlisted)}" if unlisted
                   else f"{_count(len(patches), 'mutant')} listed" if patches else "no mutants yet")


def structure(m: Marathon) -> Structure:
    """Every structural finding of ``m``, from its files alone (no scoring, no Docker).

    Raises:
        MarathonError: a gate module does not parse (named).
    """
    placeholders, roles = placeholder_findings(m)
    checks = list_checks(m, m.gate)
    design = _design_text(m)
    findings = [*placeholders, *gate_findings(m, checks)]
    findings.append(Finding(item="DESIGN.md exists", ok=design is not None,
                            detail="design notes for maintainers" if design is not None
                            else f"write {_shown(m, m.root / 'DESIGN.md')} (docs/authoring.md)"))
    findings.append(gate_list_finding(m, design))
    findings.append(mutants_readme_finding(m))
    findings.append(traps_finding(m, design))
    findings.extend(traceability_findings(m, design, checks))
    if m.mutation.language == "typescript":
        ok = m.runtime is not None and m.runtime.node is not None
        findings.append(Finding(item="a TypeScript product declares [runtime] node", ok=ok,
                                detail=f"node {m.runtime.node}" if ok
                                else "add [runtime] node = \"22.23.5\" to marathon.toml"))
    return Structure(findings=findings, placeholders=roles)
