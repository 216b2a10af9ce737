"""The controller registry: names (``single``, ``feedback-retry``, ``governed``, ``human``) to
:class:`~benchmark.controllers.base.Controller` classes (rules in ``docs/arms.md``).

:func:`check_controller` validates an arm's controller when the arm is loaded, so a bad preset
fails before any container starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.errors import MarathonError

if TYPE_CHECKING:
    from benchmark.arms import Arm
    from benchmark.controllers.base import Controller

#: Names reserved for controllers that are planned but not implemented yet, with the issue.
PLANNED: dict[str, str] = {}


def _registry() -> dict[str, type["Controller"]]:
    from benchmark.controllers.feedback_retry import FeedbackRetryController
    from benchmark.controllers.governed import GovernedController
    from benchmark.controllers.human import HumanOperatorController
    from benchmark.controllers.single import SingleController

    return {c.name: c for c in (SingleController, FeedbackRetryController, GovernedController,
                                HumanOperatorController)}


def controller_class(name: str) -> type["Controller"]:
    """The class of the registered controller ``name``.

    Raises:
        KeyError: no such controller (arms are validated when loaded).
    """
    return _registry()[name]


def controller_enforces_budget(name: str) -> bool:
    """Whether the controller ``name`` (a registered one) enforces an arm's budget."""
    return _registry()[name].enforces_budget


def controller_names() -> list[str]:
    """Names of the implemented controllers, sorted."""
    return sorted(_registry())


def check_controller(name: str, max_attempts: int) -> None:
    """Validate a controller name and an arm's ``max_attempts`` against it.

    Raises:
        MarathonError: unknown controller, planned but not implemented yet, or
            ``max_attempts > 1`` for a controller that makes one attempt.
    """
    registry = _registry()
    if name in PLANNED:
        raise MarathonError(f"controller {name!r} is not implemented yet (issue: {PLANNED[name]})")
    if name not in registry:
        raise MarathonError(f"unknown controller {name!r} (known: {', '.join(controller_names())})")
    if max_attempts > 1 and not registry[name].multi_attempt:
        raise MarathonError(f"max_attempts = {max_attempts}, but controller {name!r} makes one attempt")


def get_controller(arm: "Arm") -> "Controller":
    """The controller of an arm, ready to run episodes.

    Raises:
        MarathonError: as :func:`check_controller`.
    """
    check_controller(arm.controller, arm.max_attempts)
    return _registry()[arm.controller](arm)
