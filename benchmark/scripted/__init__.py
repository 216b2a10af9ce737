"""The scripted model: a simulated model server for offline runs of the real agent CLIs.

A simulation, not a model: it demonstrates the pipeline and the arms' control loops. See
:mod:`benchmark.scripted.server` (protocols, usage rule) and :mod:`benchmark.scripted.policy`
(what ``scripted/oracle``, ``scripted/nop`` and ``scripted/forgetful`` do).
"""

from benchmark.scripted.policy import POLICIES, Action, Library, Turn, decide
from benchmark.scripted.server import (PREFIX, ScriptedConfig, ScriptedServer, input_tokens,
                                       output_tokens)

__all__ = ["POLICIES", "PREFIX", "Action", "Library", "ScriptedConfig", "ScriptedServer", "Turn",
           "decide", "input_tokens", "output_tokens"]
