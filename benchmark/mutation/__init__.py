"""``marathon mutate``: mutation testing of a marathon's gates (docs/gates-quality.md).

One concept per module, data flowing down the list:

- :mod:`benchmark.mutation.source`: :class:`~benchmark.mutation.source.Mutant` and the
  :class:`~benchmark.mutation.source.MutantSource` interface, one source per product language;
- :mod:`benchmark.mutation.cosmicray`: the Python source (cosmic-ray, used as a generator only);
- :mod:`benchmark.mutation.equivalents`: the reviewed ``equivalent-mutants.toml`` and matching;
- :mod:`benchmark.mutation.run`: the plan (enumerate, sample, resume), scoring with the real
  scorer, and the outcome of a mutant;
- :mod:`benchmark.mutation.summary`: the mutant table (CSV, Parquet) and ``summary.md``.
"""
