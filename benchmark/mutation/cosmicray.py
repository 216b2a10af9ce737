"""The Python mutant source: cosmic-ray, used as a generator of mutants only.

Why cosmic-ray (docs/gates-quality.md): it enumerates every mutant into a SQLite session
without running anything, applies one mutant (operator, occurrence) to a source text through its
Python API, and is built around an arbitrary external test command rather than an in-process
test runner, so it suits a black-box scorer in a Docker container. (mutmut 3 rewrites the
sources into trampolines that need mutmut at run time, and maps mutants to pytest tests run in
process.)

Enumeration runs cosmic-ray's own commands in a disposable copy of the reference (its files are
never touched): ``cosmic-ray init`` writes the session, ``cr-filter-operators`` marks the
operators of :data:`EXCLUDED_OPERATORS` skipped and ``cr-filter-pragma`` the lines marked
``# pragma: no mutate``. The session (``cosmic-ray.sqlite`` in the work directory) is kept, so a
resumed ``marathon mutate`` does not enumerate again, and cosmic-ray's own tools (``cr-report``)
can read it. Scoring is never done by cosmic-ray: the harness scores each mutant itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
from importlib.metadata import version
from pathlib import Path

from cosmic_ray.mutating import mutate_code
from cosmic_ray.plugins import get_operator
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import WorkerOutcome

from benchmark.errors import MarathonError
from benchmark.marathon import MutationConfig
from benchmark.mutation.source import Mutant, MutantSource, mutant_id, unified_diff

#: Regular expressions (``re.match`` on cosmic-ray's operator names) of the mutants never scored.
#: Each keeps, per operator site, only the replacements a programmer plausibly writes by mistake:
#:
#: - binary operators: only the arithmetic counterpart (``+ -> -``, ``- -> +``, ``* -> /``,
#:   ``/ -> *``, ``// -> /``, ``% -> //``). Replacements by or of ``**``, shifts and bitwise
#:   operators, and the other arithmetic swaps, are dropped: cosmic-ray makes 11 per site and in
#:   code that joins paths (``dir / "x"``) or formats text almost all are type errors that any
#:   run kills, inflating the kill rate without testing a gate.
#: - comparisons: the "sufficient" relational-operator set of Kaminski, Ammann and Offutt
#:   ("Better predicate testing", AST 2011), which subsumes the other relational replacements
#:   (``< -> <=, !=``; ``> -> >=, !=``; ``<= -> <, ==``; ``>= -> >, ==``; ``== -> <=, >=``;
#:   ``!= -> <, >``), plus the negations ``== -> !=`` and ``!= -> ==`` (Python compares strings,
#:   ``None`` and containers with them, where ordering replacements are type errors) and
#:   ``is <-> is not``. Replacements between ``==``-style and ``is``-style comparisons are
#:   dropped (identity of small ints and interned strings makes them mostly equivalent).
#: - unary operators: only deleting ``not`` or unary minus and swapping ``-``/``+``; anything
#:   with ``~`` (bitwise invert) or replacing a sign by ``not`` is dropped.
EXCLUDED_OPERATORS: tuple[str, ...] = (
    r"core/ReplaceBinaryOperator_(?!(Add_Sub|Sub_Add|Mul_Div|Div_Mul|FloorDiv_Div|Mod_FloorDiv)$)",
    r"core/ReplaceComparisonOperator_(?!(Lt_LtE|Lt_NotEq|Gt_GtE|Gt_NotEq|LtE_Lt|LtE_Eq|GtE_Gt"
    r"|GtE_Eq|Eq_LtE|Eq_GtE|Eq_NotEq|NotEq_Lt|NotEq_Gt|NotEq_Eq|Is_IsNot|IsNot_Is)$)",
    r"core/ReplaceUnaryOperator_(?!(Delete_Not|Delete_USub|USub_UAdd|UAdd_USub)$)",
)

#: cosmic-ray ``apply`` parses with parso; parse and mutate one file at a time.
_LOCK = threading.Lock()


def _toml_list(values) -> str:
    """A TOML array of strings (JSON string escapes are valid TOML basic-string escapes)."""
    return json.dumps(list(values))


def cosmic_ray_config(config: MutationConfig) -> str:
    """The cosmic-ray configuration (TOML text) for enumerating ``config``'s files.

    Its ``test-command`` is never run (``false``: if it ever were, every mutant would be killed
    and the mistake visible).
    """
    return (
        "[cosmic-ray]\n"
        f"module-path = {_toml_list(config.paths)}\n"
        f"excluded-modules = {_toml_list(config.exclude)}\n"
        "timeout = 1.0\n"
        'test-command = "false"\n'
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
        "[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = {_toml_list(EXCLUDED_OPERATORS)}\n"
    )


def _run(step: str, args: list[str], cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        raise MarathonError(f"cosmic-ray {step} failed (exit {proc.returncode}): {tail}")


class CosmicRaySource(MutantSource):
    """Mutants of Python files by cosmic-ray (see the module docstring)."""

    language = "python"

    @property
    def name(self) -> str:
        return f"cosmic-ray {version('cosmic-ray')}"

    @property
    def filters(self) -> list[str]:
        return [f"operator filter (cosmic-ray operators-filter): `{e}`" for e in EXCLUDED_OPERATORS] + [
            "lines marked `# pragma: no mutate` (cosmic-ray pragma filter)"]

    def _enumerate(self, reference: Path, config: MutationConfig, session: Path) -> None:
        """Write the filtered cosmic-ray session to ``session`` (atomically: a crash leaves none)."""
        with tempfile.TemporaryDirectory(prefix="marathon-cosmic-ray-") as tmp:
            tree = Path(tmp) / "tree"
            shutil.copytree(reference, tree, ignore=shutil.ignore_patterns("__pycache__", ".git"))
            cfg = Path(tmp) / "cosmic-ray.toml"
            cfg.write_text(cosmic_ray_config(config), encoding="utf-8")
            db = Path(tmp) / "session.sqlite"
            _run("init", ["cosmic_ray.cli", "init", str(cfg), str(db)], tree)
            _run("operators-filter", ["cosmic_ray.tools.filters.operators_filter", str(db), str(cfg)], tree)
            _run("pragma filter", ["cosmic_ray.tools.filters.pragma_no_mutate", str(db)], tree)
            shutil.copyfile(db, session.with_suffix(".tmp"))
            session.with_suffix(".tmp").replace(session)

    def mutants(self, reference: Path, config: MutationConfig, workdir: Path) -> list[Mutant]:
        session = workdir / "cosmic-ray.sqlite"
        if not session.is_file():
            workdir.mkdir(parents=True, exist_ok=True)
            self._enumerate(reference, config, session)
        with use_db(str(session), WorkDB.Mode.open) as db:
            items = db.work_items
            skipped = {job_id: result.output for job_id, result in db.results
                       if result.worker_outcome == WorkerOutcome.SKIPPED}
        out = []
        for item in items:
            m = item.mutations[0]
            file = Path(m.module_path).as_posix()
            reason = None
            if item.job_id in skipped:
                reason = "operator filter" if skipped[item.job_id] == "Filtered operator" else "pragma: no mutate"
            out.append(Mutant(id=mutant_id(file, m.operator_name, m.occurrence), file=file,
                              line=m.start_pos[0], operator=m.operator_name, occurrence=m.occurrence,
                              function=m.definition_name or "", skip_reason=reason))
        sources: dict[str, str] = {}
        for i, mutant in enumerate(out):
            if mutant.skip_reason is None:
                if mutant.file not in sources:
                    sources[mutant.file] = (reference / mutant.file).read_text(encoding="utf-8")
                before = sources[mutant.file]
                out[i] = mutant.model_copy(update={"diff": unified_diff(mutant.file, before,
                                                                        self._mutate(mutant, before))})
        return sorted(out, key=lambda m: (m.file, m.line, m.operator, m.occurrence))

    @staticmethod
    def _mutate(mutant: Mutant, code: str) -> str:
        with _LOCK:
            mutated = mutate_code(code, get_operator(mutant.operator)(), mutant.occurrence)
        if mutated is None:
            raise MarathonError(f"mutant {mutant.id} ({mutant.file}: {mutant.operator} "
                                f"#{mutant.occurrence}) does not apply: the file changed")
        return mutated

    def apply(self, mutant: Mutant, tree: Path) -> None:
        path = tree / mutant.file
        path.write_text(self._mutate(mutant, path.read_text(encoding="utf-8")), encoding="utf-8")
