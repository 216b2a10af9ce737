"""Loading marathons: valid files load; malformed ones fail naming the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmark.errors import MarathonError
from benchmark.marathon import load_marathon
from tests.answer_fixtures import ANSWER, answer, scorer_image  # noqa: F401


def test_ledger_loads_with_six_gates_over_four_episodes():
    m = load_marathon("ledger")
    assert m.episode_ids == ["e1", "e2", "e3", "e4"]
    assert [g.name for g in m.active_gates("e1")] == ["idempotency", "privacy"]
    assert len(m.active_gates("e2")) == 4
    assert len(m.active_gates("e4")) == 6
    assert m.brief_text("e1").strip()


def test_content_hash_changes_with_any_file(tmp_path):
    root = tmp_path / "answer"
    shutil.copytree(ANSWER, root)
    before = load_marathon(root).content_hash()
    assert load_marathon(root).content_hash() == before
    (root / "gates" / "test_answer.py").write_text("# changed\n", encoding="utf-8")
    assert load_marathon(root).content_hash() != before


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    root = tmp_path / "answer"
    shutil.copytree(ANSWER, root)
    toml = root / "marathon.toml"
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new, 1))
    return root


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('brief = "e1/brief.md"', 'brief = "e9/brief.md"', "episodes[0].brief: file e9/brief.md not found"),
        ('active_from = "e1"', 'active_from = "e7"', "gate[0].active_from: unknown episode 'e7'"),
        ('[[gate]]\nname = "answer"', '[[gate]]\nname = "missing"', "gate[0].name: gate module"),
        ('starter = "starter"', 'starter = "nowhere"', "starter: directory nowhere not found"),
        ('name = "answer"', 'name = "other"', "name: 'other' differs from its directory 'answer'"),
        ('title = "Answer"', 'title = "Answer"\ncolour = "red"', "episodes[0].colour: Extra inputs"),
        ('name = "answer"', 'name = "answer', "malformed TOML"),
        ('[[gate]]', '[[episodes]]\nid = "e1"\ntitle = "x"\nbrief = "e1/brief.md"\nreference = "reference/e1"\n\n[[gate]]',
         "episodes[1].id: duplicate episode 'e1'"),
    ],
)
def test_malformed_marathon_names_file_and_field(tmp_path, old, new, expected):
    root = _broken(tmp_path, old, new)
    with pytest.raises(MarathonError) as err:
        load_marathon(root)
    message = str(err.value)
    assert str(root / "marathon.toml") in message
    assert expected in message
    assert "\n" not in message


def test_unknown_marathon_is_a_clear_error():
    with pytest.raises(MarathonError, match="unknown marathon 'nosuch'"):
        load_marathon("nosuch")
