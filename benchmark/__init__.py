"""marathon: a benchmark harness for long-running coding agents.

A *marathon* is a sequence of *episodes* on one workspace; the hidden *gates* of every earlier
episode stay active, and the score is the share of gates still green at the end.
"""

__version__ = "0.1.0"
