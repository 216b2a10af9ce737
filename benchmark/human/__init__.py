"""The human-operator arm's machinery: the recorded terminal relay (:mod:`.terminal`), the
operator's shell in the trial container (:mod:`.shell`) and the steering measures read from
what was recorded (:mod:`.steering`). The controller is :mod:`benchmark.controllers.human`;
the rules are in ``docs/arms.md`` (*The human-operator arm*)."""
