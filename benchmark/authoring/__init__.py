"""``marathon new``: write the skeleton of a new marathon, ready for ``marathon validate``.

The skeleton is the smallest marathon that loads: ``episodes/NAME/`` (``marathon.toml``, a
``DESIGN.md`` template with the gate list, the traceability and the traps tables, a starter,
brief ``e1``, a placeholder reference ``e1``, ``equivalent-mutants.toml``) and ``gates/NAME/``
(a ``conftest.py`` with the seed, seeded-input and black-box product helpers, an independent
model ``_model.py``, one gate module ``test_example.py`` with one example check, and
``mutants/README.md``). Every part an author still has to write holds the marker
:data:`~benchmark.structure.PLACEHOLDER`, which ``marathon validate`` reports by name
(:mod:`benchmark.structure`); docs/authoring.md walks through the rest.

The templates are the files under ``templates/``: ``common/`` for every language, then
``python/`` or ``typescript/``, each split into ``episodes/`` and ``gates/``. A template file
ends in ``.tmpl`` (so no tool takes it for code) and may use ``{{name}}`` (the marathon),
``{{package}}`` (its Python package name), ``{{command}}`` (the product's command line),
``{{command_list}}`` (the same as a Python list), ``{{language}}`` and ``{{node}}``, in its
path and its text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from benchmark.errors import MarathonError

TEMPLATES = Path(__file__).parent / "templates"

#: Languages ``marathon new --language`` writes a skeleton for.
LANGUAGES = ("python", "typescript")

#: A marathon name (the ``name`` field of marathon.toml, and its directory names).
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")

#: Node.js of a TypeScript skeleton's ``[runtime]`` (the relay marathon's and StrykerJS's).
NODE_VERSION = "22.23.5"

TEMPLATE_SUFFIX = ".tmpl"


class Skeleton(BaseModel):
    """What :func:`new_marathon` wrote."""

    episodes: Path
    """The marathon directory, ``ROOT/episodes/NAME``."""
    gates: Path
    """The gates directory, ``ROOT/gates/NAME``."""
    files: list[Path]
    """Every file written, relative to ROOT, sorted."""


def _variables(name: str, language: str) -> dict[str, str]:
    package = name.replace("-", "_")
    command = ["python3", "-m", package] if language == "python" else ["node", "src/main.ts"]
    return {
        "name": name,
        "package": package,
        "command": " ".join(command),
        "command_list": json.dumps(command),
        "language": {"python": "Python 3.11, standard library only",
                     "typescript": "TypeScript on Node.js, standard library only"}[language],
        "node": NODE_VERSION,
    }


def _fill(text: str, variables: dict[str, str]) -> str:
    for key, value in variables.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def render(name: str, language: Literal["python", "typescript"] = "python") -> dict[str, str]:
    """The skeleton's files as ``{path relative to the project root: text}``.

    Paths start with ``episodes/NAME/`` or ``gates/NAME/``. Nothing is written.
    """
    variables = _variables(name, language)
    files: dict[str, str] = {}
    for layer in ("common", language):
        for kind in ("episodes", "gates"):
            base = TEMPLATES / layer / kind
            for path in sorted(p for p in base.rglob("*" + TEMPLATE_SUFFIX) if p.is_file()):
                rel = path.relative_to(base).as_posix().removesuffix(TEMPLATE_SUFFIX)
                files[f"{kind}/{name}/{_fill(rel, variables)}"] = _fill(
                    path.read_text(encoding="utf-8"), variables)
    return files


def check_name(name: str, root: Path, language: str = "python") -> None:
    """Refuse a name that is not a valid marathon name or that ROOT already uses.

    Raises:
        MarathonError: one line naming NAME: invalid characters, a Python product whose package
            would shadow a standard library module (``python3 -m json``), or ``episodes/NAME``
            or ``gates/NAME`` exists already.
    """
    if not NAME_RE.match(name):
        raise MarathonError(f"NAME: {name!r} is not a valid marathon name (a lowercase letter, "
                            "then lowercase letters, digits, '-' or '_')")
    package = name.replace("-", "_")
    if language == "python" and package in sys.stdlib_module_names:
        raise MarathonError(f"NAME: {name!r} would name the product's package {package!r}, a Python "
                            "standard library module")
    for kind in ("episodes", "gates"):
        if os.path.lexists(root / kind / name):
            raise MarathonError(f"NAME: marathon {name!r} exists already ({root / kind / name})")


def new_marathon(name: str, language: Literal["python", "typescript"] = "python", *,
                 root: Path) -> Skeleton:
    """Write the skeleton of marathon ``name`` under ``root`` (the project root, holding
    ``episodes/`` and ``gates/``, created if missing).

    The files are written into a temporary directory under ``root`` and moved into place at the
    end: on any error nothing is left behind.

    Raises:
        MarathonError: bad or taken name (see :func:`check_name`), or an unknown language.
        OSError: ``root`` cannot be written.
    """
    if language not in LANGUAGES:
        raise MarathonError(f"--language: {language!r} is not one of {', '.join(LANGUAGES)}")
    check_name(name, root, language)
    files = render(name, language)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".marathon-new-", dir=root))
    moved: list[Path] = []
    try:
        for rel, text in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        for kind in ("episodes", "gates"):
            (root / kind).mkdir(exist_ok=True)
            if os.path.lexists(root / kind / name):  # taken since check_name: a concurrent `new`
                raise MarathonError(f"NAME: marathon {name!r} exists already ({root / kind / name})")
            os.rename(tmp / kind / name, root / kind / name)
            moved.append(root / kind / name)
    except BaseException:
        for path in moved:
            shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Skeleton(episodes=root / "episodes" / name, gates=root / "gates" / name,
                    files=sorted(Path(rel) for rel in files))
