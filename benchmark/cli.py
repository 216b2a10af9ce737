"""The ``marathon`` command line: validate marathons, build images, run and inspect runs.

Exit status, for every command:

- 0: done (a run: every trial complete);
- 1: a run stopped with failed trials, or on a storage fault (disk full, read-only run
  directory); it is resumable (``marathon run --resume RUN_DIR``); ``validate``: a finding
  failed;
- 2: usage or input error: one line on stderr naming the file, field or flag at fault; nothing
  is written before the inputs are known to be good;
- 130: interrupted (Ctrl-C, SIGTERM); a run is resumable.

No error prints a traceback: a failed trial's traceback goes to the run's ``errors.log``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from benchmark import __version__
from benchmark.errors import MarathonError

console = Console(stderr=True, highlight=False, soft_wrap=True)


#: Exit status of a run with failed trials or stopped by a storage fault (resumable).
EXIT_FAILED = 1
#: Exit status of a usage or input error.
EXIT_USAGE = 2
#: Exit status of an interrupted command (128 + SIGINT).
EXIT_INTERRUPTED = 130


class MarathonGroup(click.Group):
    """A click group that turns user-facing errors into one line on stderr: a
    :class:`MarathonError`, an :class:`OSError` (a file that cannot be read or written,
    named) or an error of the Docker engine exits 2; Ctrl-C outside a run's own handling
    exits 130."""

    def invoke(self, ctx: click.Context):
        import docker.errors

        from benchmark.storage import describe

        try:
            return super().invoke(ctx)
        except MarathonError as e:
            click.echo(f"marathon: error: {e}", err=True)
            sys.exit(EXIT_USAGE)
        except OSError as e:
            click.echo(f"marathon: error: {describe(e)}", err=True)
            sys.exit(EXIT_USAGE)
        except docker.errors.DockerException as e:
            line = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            click.echo(f"marathon: error: Docker engine: {line}", err=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo("marathon: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=MarathonGroup)
@click.version_option(__version__, prog_name="marathon")
def main() -> None:
    """Benchmark harness for long-running coding agents.

    A marathon is a sequence of episodes on one workspace; the hidden gates of every earlier
    episode stay active. See README.md.
    """


@main.group()
def images() -> None:
    """Build the harness's Docker images (base, scorer, agent)."""


@images.command("build")
@click.option("--no-agent", is_flag=True, help="Skip the agent image (scorer work only).")
@click.option("--marathon", "marathons", multiple=True, metavar="MARATHON",
              help="Also build the runtime images of this marathon (repeatable).  "
                   "[default: every marathon under episodes/ that declares a [runtime]]")
def images_build(no_agent: bool, marathons: tuple[str, ...]) -> None:
    """Build every image whose recipe changed; print their tags (plain images first, then each
    declared agent's image (agents/NAME.toml), then the runtime images of each marathon that
    declares a [runtime]; a run builds its agents' images on a runtime image when it needs
    them)."""
    from benchmark.images import build_images
    from benchmark.marathon import load_marathon
    from benchmark.paths import EPISODES_DIR

    log = lambda line: console.print(f"[dim]{line}[/]")  # noqa: E731
    names = marathons or tuple(sorted(p.parent.name for p in EPISODES_DIR.glob("*/marathon.toml")))
    runtimes = {name: load_marathon(name).runtime for name in names}
    built = build_images(agent=not no_agent, log=log)
    tags = [built.base, built.scorer, built.agent, *built.agents.values()]
    for name, runtime in runtimes.items():
        if runtime is not None:
            derived = build_images(agent=not no_agent, log=log, runtime=runtime, agents=[])
            tags += [derived.scorer, derived.agent]
    for tag in dict.fromkeys(t for t in tags if t):
        click.echo(tag)


class OneLineCommand(click.Command):
    """A command whose usage errors (bad flag, bad value) are one line and exit 2, like every
    other user-facing error."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            raise MarathonError(e.format_message().replace("\n", " ")) from None


@main.command(cls=OneLineCommand)
@click.argument("marathon_name", metavar="MARATHON")
@click.option("--seeds", "seeds_text", default="0,1,2", show_default=True,
              help="Comma-separated seeds for the checks' inputs; every item is scored on each.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Scorings run concurrently.")
@click.option("--no-progress", is_flag=True, help="No progress bar; a line every 10% of the scorings.")
def validate(marathon_name: str, seeds_text: str, jobs: int, no_progress: bool) -> None:
    """Check MARATHON (a name under episodes/ or a path). First, from its files alone, what is
    left to write: placeholders (a `marathon new` skeleton's), >= 3 tagged checks and >= 2
    hand-written mutants per gate, DESIGN.md's traps and traceability tables; a marathon with
    placeholders is not scored. Then, on every seed: references pass, the starter fails every
    gate, every mutant fails its gate (on every seed: one caught on some seeds only is a
    finding), scoring is deterministic. Exits 1 if any finding fails."""
    from benchmark.images import build_images
    from benchmark.marathon import load_marathon
    from benchmark.progress import CountProgress
    from benchmark.validate import Finding, parse_seeds, scoring_count, validate as run_validate

    from benchmark.structure import structure

    seeds = parse_seeds(seeds_text)
    m = load_marathon(marathon_name)

    def line(f: Finding) -> str:
        mark = "[green]ok[/]  " if f.ok else "[red]FAIL[/]"
        return f"{mark} {escape(f.item)}  [dim]{escape(f.detail)}[/]"

    shape = structure(m)  # before any image is built: a skeleton needs no Docker
    if not shape.scorable:
        for f in shape.findings:
            console.print(line(f))
        bad = [f for f in shape.findings if not f.ok]
        console.print(f"{m.name}: {len(shape.findings) - len(bad)}/{len(shape.findings)} findings ok; "
                      f"not scored: {', '.join(shape.placeholders)} "
                      f"{'is' if len(shape.placeholders) == 1 else 'are'} still placeholders "
                      "(docs/authoring.md)")
        sys.exit(1)
    image = build_images(agent=False, log=lambda line: console.print(f"[dim]{line}[/]"),
                         runtime=m.runtime).scorer

    with CountProgress("scorings", scoring_count(m, seeds), console, live=not no_progress) as bar:
        findings = run_validate(m, image=image, seeds=seeds, jobs=jobs,
                                progress=lambda f: bar.note(line(f)), scored=bar.advance)
    bad = [f for f in findings if not f.ok]
    console.print(f"{m.name}: {len(findings) - len(bad)}/{len(findings)} findings ok "
                  f"(seeds {', '.join(map(str, seeds))})")
    sys.exit(1 if bad else 0)


@main.command("new", cls=OneLineCommand)
@click.argument("name")
@click.option("--language", type=click.Choice(["python", "typescript"]), default="python",
              show_default=True, help="Language of the product (typescript: Node.js, declared in [runtime]).")
def new(name: str, language: str) -> None:
    """Write the skeleton of a new marathon NAME: episodes/NAME/ (marathon.toml, DESIGN.md, a
    starter, brief e1, a placeholder reference e1, equivalent-mutants.toml) and gates/NAME/
    (conftest.py with the seed, seeded-input and product helpers, an independent model, a gate
    module with one example check, mutants/). `marathon validate NAME` then lists what is left
    to write; docs/authoring.md walks through it. Prints the files written."""
    from benchmark.authoring import new_marathon
    from benchmark.paths import PROJECT_ROOT

    skeleton = new_marathon(name, language, root=PROJECT_ROOT)
    for rel in skeleton.files:
        click.echo(str(rel))
    console.print(f"{name}: skeleton written to {skeleton.episodes} and {skeleton.gates}; "
                  f"`marathon validate {name}` lists what is left to write (docs/authoring.md)")


@main.command(cls=OneLineCommand)
@click.argument("marathon_name", metavar="MARATHON")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Output directory (tables, summary.md, resumable sessions).  [default: results/mutate-MARATHON]")
@click.option("--seeds", "seeds_text", default="0,1,2", show_default=True,
              help="Comma-separated seeds; each mutant is scored on them in turn until one kills it or times out.")
@click.option("--sample", type=click.IntRange(min=1), help="Score a seeded random sample of N candidate mutants.  [default: all]")
@click.option("--seed", "sample_seed", type=int, default=0, show_default=True, help="Seed of the --sample draw.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Scorings run concurrently.")
@click.option("--no-progress", is_flag=True,
              help="No progress bar: a line per scored mutant (with the bar: per mutant not killed).")
def mutate(marathon_name: str, out_dir: Path | None, seeds_text: str, sample: int | None,
           sample_seed: int, jobs: int, no_progress: bool) -> None:
    """Mutation-test the gates of MARATHON: mutants of the final reference (cosmic-ray for
    Python) are scored with the real scorer, seed after seed until one kills them; writes
    mutants.csv, mutants.parquet and summary.md (kill rate with its Wilson interval, survivors
    with their diffs) into OUT. Re-running the same command resumes. Prints the path of
    summary.md."""
    from benchmark.images import build_images
    from benchmark.marathon import load_marathon
    from benchmark.mutation.equivalents import load_equivalents
    from benchmark.mutation.run import check_baseline, classify, plan, score_pending
    from benchmark.mutation.source import mutant_source
    from benchmark.mutation.summary import write_outputs
    from benchmark.paths import RESULTS_DIR
    from benchmark.progress import CountProgress
    from benchmark.validate import parse_seeds

    seeds = parse_seeds(seeds_text)
    m = load_marathon(marathon_name)
    mutant_source(m.mutation)  # its library is installed
    load_equivalents(m.mutation.equivalents)  # well-formed, before anything runs
    out = out_dir if out_dir is not None else RESULTS_DIR / f"mutate-{m.name}"
    image = build_images(agent=False, log=lambda line: console.print(f"[dim]{line}[/]"),
                         runtime=m.runtime).scorer
    p = plan(m, out, image=image, seeds=seeds, sample=sample, sample_seed=sample_seed)
    pending = p.pending
    console.print(f"{m.name}: {len(p.mutants)} mutants, {p.candidates} candidates, "
                  f"{len(p.selected)} selected, {len(p.selected) - len(pending)} already scored "
                  f"(session {p.session})")
    for i in p.stale:
        e = p.equivalents[i]
        console.print(f"[yellow]stale[/] {escape(str(m.mutation.equivalents))}: equivalent[{i}] "
                      f"({escape(e.file)}) matches no mutant")
    if pending:
        total = len(seeds) * (1 + len(pending))
        with CountProgress("scorings", total, console, live=not no_progress,
                           counts=False) as bar:
            def finished(mutant, result) -> None:
                outcome = classify(result.verdicts).value
                if outcome != "killed" or not bar.is_live:
                    done = sum(i in p.done for i in p.selected)
                    bar.note(f"{done}/{len(p.selected)} {outcome:8} {mutant.id} "
                             f"{escape(mutant.file)}:{mutant.line} {mutant.operator} "
                             f"({result.seconds:.1f} s)")

            try:
                check_baseline(p, jobs=jobs, scored=bar.advance)
                score_pending(p, jobs=jobs, scored=bar.advance, finished=finished)
            except KeyboardInterrupt:
                console.print(f"interrupted: every finished mutant is kept in {p.store}; "
                              "run the same command again to resume")
                sys.exit(130)
    command = f"marathon mutate {marathon_name} --seeds {','.join(map(str, seeds))}"
    command += f" --sample {sample} --seed {sample_seed}" if sample is not None else ""
    files = write_outputs(p, out, command)
    if files.scored:
        console.print(f"{m.name}: {files.killed}/{files.scored} scored mutants killed = "
                      f"{files.killed / files.scored:.1%} (Wilson 95% {files.low:.1%} to {files.high:.1%})")
    click.echo(str(files.summary))


@main.command(cls=OneLineCommand)
@click.option("-c", "--config", "config_file", type=click.Path(path_type=Path),
              help="Experiment TOML file; flags override its values.")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path),
              help="Finish the interrupted run in this run directory (takes only --jobs besides).")
@click.option("--marathon", "marathons", multiple=True,
              help="Marathon name (under episodes/) or path (repeatable: a suite run).")
@click.option("--mode", type=click.Choice(["cumulative", "isolated", "both"]),
              help="Episodes start from the agent's workspace (cumulative), from the previous "
                   "episode's reference (isolated), or both.  [default: cumulative]")
@click.option("--arm", "arms", multiple=True, help="Arm preset name or TOML path (repeatable).")
@click.option("--agent", "agents", multiple=True, help="Agent name, e.g. oracle, nop (repeatable).")
@click.option("--model", "models", multiple=True, help="Model, for agents that use one (repeatable).")
@click.option("--effort", multiple=True, help="Reasoning effort, for agents that use a model (repeatable).")
@click.option("--replicates", type=int, help="Trials per arm x agent x model x effort (>= 1).  [default: 1]")
@click.option("--seed-base", type=int, help="Base of the replicates' seeds.  [default: 0]")
@click.option("--jobs", type=int, help="Trials run concurrently.  [default: 1]")
@click.option("--out", type=click.Path(path_type=Path), help="Directory for run directories.  [default: results/]")
@click.option("--time-limit", "time_limit_s", type=float, help="Per-attempt agent time limit, seconds.  [default: 1800]")
@click.option("--run-id", help="Run id (default: start time and random digits).")
@click.option("--episodes", type=int, help="Play only the first N episodes (>= 1).  [default: all]")
@click.option("--protocol", "protocol_file", type=click.Path(path_type=Path),
              help="Run exactly the plan of this protocol (protocols/NAME.toml); takes only "
                   "--jobs, --out, --run-id, --ray besides.")
@click.option("--ray", help="Run the trials on the Ray cluster at ADDRESS (HOST:PORT, ray://HOST:PORT, "
                           "auto), or on a throwaway local one of N worker nodes (local:N); needs "
                           "the ray extra (docs/scaling.md).", metavar="ADDRESS")
@click.option("--no-progress", is_flag=True, help="No live display; print one line per finished episode.")
@click.option("--operator", metavar="ID", help="The operator's id on the human-operator arm (recorded as a "
              "pseudonym, a hash; default: $MARATHON_OPERATOR, else the login name).")
def run(config_file, resume_dir, protocol_file, no_progress, operator, **flags) -> None:
    """Run marathons: every marathon x mode x arm x agent x model x effort x replicate is a
    trial in its own container. Results go to OUT/RUN_ID/ (Parquet tables, manifest, artifacts).

    Exit status: 0 complete; 1 some trial failed (see errors.log) or a storage fault stopped
    the run (disk full, read-only): resumable with --resume; 2 bad input; 130 interrupted
    (resumable with --resume).
    """
    from benchmark.controllers.human import OPERATOR_ENV
    from benchmark.driver import resume_run, start_run
    from benchmark.experiment import load_config

    if operator is not None:
        if not operator.strip():
            raise MarathonError("--operator: give a non-empty id")
        os.environ[OPERATOR_ENV] = operator.strip()

    if resume_dir is not None:
        extra = [k for k, v in flags.items() if v not in (None, ()) and k not in ("jobs", "ray")]
        if config_file is not None or extra or protocol_file is not None:
            given = ["-c"] if config_file else []
            given += ["--protocol"] if protocol_file is not None else []
            given += ["--" + k.removesuffix("_s").replace("_", "-") for k in extra]
            raise MarathonError(f"--resume: takes no other run options but --jobs and --ray (got {', '.join(given)})")
        if flags["ray"] is not None:
            from benchmark.experiment import cluster_config
            cluster_config(flags["ray"])
        outcome = resume_run(resume_dir, jobs=flags["jobs"], ray=flags["ray"],
                             display=not no_progress, console=console)
    elif protocol_file is not None:
        from benchmark.experiment import cluster_config
        from benchmark.manifest import ProtocolRef
        from benchmark.protocol import load_protocol, protocol_hash, run_config

        extra = [k for k, v in flags.items()
                 if v not in (None, ()) and k not in ("jobs", "out", "run_id", "ray")]
        if config_file is not None or extra:
            given = ["-c"] if config_file else []
            given += ["--" + k.removesuffix("_s").replace("_", "-") for k in extra]
            raise MarathonError(f"--protocol: the protocol fixes the plan; takes only --jobs, --out, "
                                f"--run-id, --ray besides (got {', '.join(given)})")
        protocol = load_protocol(protocol_file)
        config = run_config(protocol, protocol_file,
                            {k: flags[k] for k in ("jobs", "out", "run_id")})
        if flags["ray"] is not None:  # where trials run is not part of the plan
            config = config.model_copy(update={"cluster": cluster_config(flags["ray"])})
        ref = ProtocolRef(name=protocol.name, path=str(protocol_file),
                          sha256=protocol_hash(protocol_file))
        outcome = start_run(config, display=not no_progress, console=console, protocol=ref)
    else:
        config = load_config(config_file, flags)
        outcome = start_run(config, display=not no_progress, console=console)
    console.print(f"{outcome.run_dir}: {outcome.status}, {outcome.trials_complete}/"
                  f"{outcome.trials_total} trials complete in {outcome.wall_s:.1f} s")
    for line in outcome.failures:
        console.print(f"[red]failed[/] {line}")
    if outcome.reason and outcome.reason.startswith("storage fault"):
        unrecorded = "" if outcome.recorded else " (the manifest could not be updated)"
        click.echo(f"marathon: error: {outcome.reason}{unrecorded}", err=True)
    if outcome.status != "complete":
        console.print(f"resume with: marathon run --resume {outcome.run_dir}")
    if outcome.status == "interrupted":
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(0 if outcome.status == "complete" else EXIT_FAILED)


@main.command(cls=OneLineCommand)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path),
                metavar="RUN_DIR...")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Output directory.  [default: <first RUN_DIR>/report]")
@click.option("--k", type=click.IntRange(min=1),
              help="k of pass@k and pass^k.  [default: fewest complete replicates of any group, at most 5]")
@click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--protocol", "protocol_file", type=click.Path(path_type=Path),
              help="Check the runs against this protocol (protocols/NAME.toml): adds a Protocol "
                   "section (planned vs done, deviations, hypotheses).")
def report(run_dirs: tuple[Path, ...], out_dir: Path | None, k: int | None, resamples: int,
           seed: int, protocol_file: Path | None) -> None:
    """Write tables, statistics, charts and report.md for one or more runs (several runs
    combine, e.g. one per model or per marathon; a suite gets per-marathon sections and a
    pooled summary). Prints the path of report.md."""
    from benchmark.experiment import check_output_dir
    from benchmark.report import ReportOptions, build_report

    out = out_dir if out_dir is not None else run_dirs[0] / "report"
    check_output_dir(out, flag="--out" if out_dir is not None else "RUN_DIR")
    files = build_report(list(run_dirs), out, ReportOptions(k=k, resamples=resamples, seed=seed),
                         protocol=protocol_file)
    console.print(f"report: {len(files.tables)} tables, {len(files.charts)} chart files in "
                  f"{files.seconds:.1f} s")
    click.echo(str(files.report))


@main.command(cls=OneLineCommand)
@click.argument("run_dir", type=click.Path(path_type=Path))
def status(run_dir: Path) -> None:
    """Show the trials of RUN_DIR: episodes done, attempts, last and final score."""
    from rich.console import Console as _Console

    from benchmark.status import status_table

    table, summary = status_table(run_dir)
    out = _Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    out.print(table)
    out.print(summary)
