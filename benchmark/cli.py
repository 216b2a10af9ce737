"""The ``marathon`` command line: validate marathons, build images, run and inspect runs.

Every user-facing error is one line on stderr naming the file, field or flag at fault, and
exit status 2; nothing is written before the inputs are known to be good.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console

from benchmark import __version__
from benchmark.errors import MarathonError

console = Console(stderr=True, highlight=False)


class MarathonGroup(click.Group):
    """A click group that turns :class:`MarathonError` into a one-line error and exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MarathonError as e:
            click.echo(f"marathon: error: {e}", err=True)
            sys.exit(2)


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
def images_build(no_agent: bool) -> None:
    """Build every image whose recipe changed; print their tags."""
    from benchmark.images import build_images

    built = build_images(agent=not no_agent, log=lambda line: console.print(f"[dim]{line}[/]"))
    for tag in (built.base, built.scorer, built.agent):
        if tag:
            click.echo(tag)


@main.command()
@click.argument("marathon_name", metavar="MARATHON")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the checks' inputs.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Scorings run concurrently.")
def validate(marathon_name: str, seed: int, jobs: int) -> None:
    """Check MARATHON (a name under episodes/ or a path): references pass, starter and mutants
    fail, scoring is deterministic. Exits 1 if any finding fails."""
    from benchmark.images import build_images
    from benchmark.marathon import load_marathon
    from benchmark.validate import Finding, validate as run_validate

    m = load_marathon(marathon_name)
    image = build_images(agent=False, log=lambda line: console.print(f"[dim]{line}[/]")).scorer

    def show(f: Finding) -> None:
        mark = "[green]ok[/]  " if f.ok else "[red]FAIL[/]"
        console.print(f"{mark} {f.item}  [dim]{f.detail}[/]")

    findings = run_validate(m, image=image, seed=seed, jobs=jobs, progress=show)
    bad = [f for f in findings if not f.ok]
    console.print(f"{m.name}: {len(findings) - len(bad)}/{len(findings)} findings ok")
    sys.exit(1 if bad else 0)
