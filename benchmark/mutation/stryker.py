"""The TypeScript/JavaScript mutant source: StrykerJS, used as a generator of mutants only.

Why StrykerJS (docs/gates-quality.md): it is the maintained mutation-testing framework for
JavaScript and TypeScript, its mutators are designed to produce mutants that still parse and
run (no type-error noise), and it enumerates mutants without running any test through its
**mutation server** (``stryker serve stdio``, the mutation-server protocol its editor plugins
use): the method ``discover`` answers every mutant of the selected files with its mutator, its
source location and its replacement text, in the schema of Stryker's JSON report
(``mutation-testing-report-schema``). The harness turns each into a plain edit of the file text
(replace the located span by the replacement), so a mutant is an ordinary source diff applied to
a copy of the reference, which the real scorer then runs as the agent's product would run. Stryker
itself never runs the product or a test (its ``run`` instruments the code with mutant switches
and needs a test runner inside the process under test; our scorer is a sealed container).

StrykerJS is installed by ``make setup`` into ``tools/stryker/node_modules`` from the pinned
``tools/stryker/package.json`` and ``package-lock.json`` (``npm ci``), together with the Node.js
that runs it (the npm registry's ``node-linux-<arch>`` package: StrykerJS 10 needs Node >= 22,
whatever Node the host has). Enumeration happens in a disposable copy of the reference; the
answer is cached in the session (``stryker-discover.json``), so a resumed ``marathon mutate``
does not enumerate again.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from benchmark.errors import MarathonError
from benchmark.marathon import MutationConfig
from benchmark.mutation.source import Mutant, MutantSource, mutant_id, unified_diff
from benchmark.paths import PROJECT_ROOT

#: Where ``make setup`` installs StrykerJS and its Node.js (``npm ci`` of the pinned lockfile).
TOOL_DIR = PROJECT_ROOT / "tools" / "stryker"
#: File extensions mutated when ``[mutation] paths`` names a directory.
EXTENSIONS = ("ts", "mts", "cts", "tsx", "js", "mjs", "cjs", "jsx")
#: Seconds the mutation server may take to start and answer ``discover``.
DISCOVER_TIMEOUT_S = 300.0
#: Line terminators as JavaScript (Babel) counts lines.
_LINE_END = re.compile(r"\r\n|[\n\r\u2028\u2029]")


def _install_hint() -> str:
    return f"run `make setup` (npm ci --prefix {TOOL_DIR})"


def tool_paths(tool_dir: Path = TOOL_DIR) -> tuple[Path, Path]:
    """``(node, stryker.js)`` of the installed tool.

    Raises:
        MarathonError: StrykerJS or its Node.js is not installed in ``tool_dir`` (one line,
            saying how to install it).
    """
    node = tool_dir / "node_modules" / ".bin" / "node"
    cli = tool_dir / "node_modules" / "@stryker-mutator" / "core" / "bin" / "stryker.js"
    if not cli.is_file() or not node.exists():
        missing = "StrykerJS" if not cli.is_file() else "its Node.js"
        raise MarathonError(f"marathon mutate needs StrykerJS for TypeScript, and {missing} is not "
                            f"installed in {tool_dir}: {_install_hint()}")
    return node, cli


def stryker_config(config: MutationConfig) -> dict:
    """The StrykerJS configuration (``stryker.config.json``) selecting ``config``'s files.

    A path naming a directory selects its files with a JavaScript or TypeScript extension
    (:data:`EXTENSIONS`); ``exclude`` globs become negated ``mutate`` patterns. The test runner
    named is never started (``discover`` runs none), and no plugin is loaded.
    """
    braces = "{" + ",".join(EXTENSIONS) + "}"
    mutate = []
    for path in config.paths:
        base = path.strip("/")
        if base in ("", "."):
            mutate.append(f"**/*.{braces}")
        elif Path(base).suffix.lstrip(".") in EXTENSIONS:
            mutate.append(base)
            mutate.append(f"{base}/**/*.{braces}")
        else:
            mutate.append(f"{base}/**/*.{braces}")
    mutate += [f"!{glob}" for glob in config.exclude]
    return {"mutate": mutate, "testRunner": "command", "plugins": [], "concurrency": 1}


def _read_frames(stream, out: queue.Queue) -> None:
    """Read ``Content-Length`` framed JSON messages from ``stream`` into ``out``; ``None`` at EOF."""
    try:
        while True:
            header = b""
            while not header.endswith(b"\r\n\r\n"):
                byte = stream.read(1)
                if not byte:
                    return
                header += byte
            match = re.search(rb"Content-Length:\s*(\d+)", header, re.IGNORECASE)
            if match is None:
                return
            out.put(json.loads(stream.read(int(match.group(1)))))
    except (OSError, ValueError):
        return
    finally:
        out.put(None)


def discover(tree: Path, config_file: Path, tool_dir: Path = TOOL_DIR,
             timeout_s: float = DISCOVER_TIMEOUT_S) -> dict:
    """Ask StrykerJS's mutation server for every mutant of ``tree`` (its working directory).

    Sends ``configure`` (the configuration file) and ``discover`` (no file filter: the
    configuration's ``mutate`` patterns select the files) over ``stryker serve stdio``.

    Returns:
        The ``discover`` result: ``{"files": {path: {"mutants": [{"id", "mutatorName",
        "replacement", "location": {"start": {"line", "column"}, "end": {...}}, ...}]}}}``;
        lines and columns 1-based, the end exclusive (mutation-server protocol).

    Raises:
        MarathonError: the tool is missing, the server exits or answers an error, or it takes
            longer than ``timeout_s`` seconds.
    """
    node, cli = tool_paths(tool_dir)
    messages = [{"jsonrpc": "2.0", "id": 1, "method": "configure",
                 "params": {"configFilePath": str(config_file)}},
                {"jsonrpc": "2.0", "id": 2, "method": "discover", "params": {}}]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([str(node), str(cli), "serve", "stdio"], cwd=tree,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        answers: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_read_frames, args=(proc.stdout, answers), daemon=True)
        reader.start()
        try:
            for message in messages:
                body = json.dumps(message).encode()
                proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            proc.stdin.flush()
            while True:
                try:
                    answer = answers.get(timeout=timeout_s)
                except queue.Empty:
                    raise MarathonError(f"StrykerJS discover took longer than {timeout_s:g} s") from None
                if answer is None:
                    proc.wait(10)
                    err.seek(0)
                    tail = " ".join(err.read().decode(errors="replace").strip().splitlines()[-2:])
                    raise MarathonError(f"StrykerJS mutation server exited (status {proc.returncode}) "
                                        f"before answering discover: {tail or 'no output'}")
                if answer.get("id") in (1, 2) and "error" in answer:
                    raise MarathonError(f"StrykerJS {messages[answer['id'] - 1]['method']} failed: "
                                        f"{str(answer['error'].get('message', answer['error']))[:300]}")
                if answer.get("id") == 2:
                    return answer["result"]
        except OSError as e:
            raise MarathonError(f"StrykerJS mutation server: {e}") from None
        finally:
            proc.kill()
            proc.wait()
            reader.join(5)


def _read(path: Path) -> str:
    """A file's text exactly as stored (no newline translation: offsets are StrykerJS's)."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def _line_starts(text: str) -> list[int]:
    """Offsets (Python characters) where each line of ``text`` starts, lines as JavaScript counts them."""
    return [0] + [m.end() for m in _LINE_END.finditer(text)]


def _offset(text: str, starts: list[int], line: int, column: int) -> int:
    """The offset in ``text`` of a 1-based ``line`` and 1-based ``column`` counted in UTF-16
    code units (JavaScript string indices)."""
    start = starts[line - 1]
    end = starts[line] if line < len(starts) else len(text)
    units = text[start:end].encode("utf-16-le")[: 2 * (column - 1)]
    return start + len(units.decode("utf-16-le", errors="ignore"))


class StrykerSource(MutantSource):
    """Mutants of TypeScript/JavaScript files by StrykerJS (see the module docstring).

    Every mutator StrykerJS enables by default is kept; mutants StrykerJS itself marks ignored
    (``// Stryker disable`` comments) are skipped with its reason.
    """

    language = "typescript"

    def __init__(self, tool_dir: Path = TOOL_DIR):
        self.tool_dir = tool_dir
        tool_paths(tool_dir)
        #: mutant id -> (file, start offset, end offset, replaced text, replacement)
        self._edits: dict[str, tuple[str, int, int, str, str]] = {}

    @property
    def name(self) -> str:
        core = self.tool_dir / "node_modules" / "@stryker-mutator" / "core" / "package.json"
        node = next((self.tool_dir / "node_modules").glob("node-linux-*/package.json"), None)
        versions = f"StrykerJS {json.loads(core.read_text())['version']}"
        if node is not None:
            versions += f" (Node.js {json.loads(node.read_text())['version']})"
        return versions

    @property
    def filters(self) -> list[str]:
        return ["every StrykerJS mutator enabled by default (none filtered)",
                "code marked `// Stryker disable` (StrykerJS ignores it)"]

    def _discovered(self, reference: Path, config: MutationConfig, workdir: Path) -> dict:
        cache = workdir / "stryker-discover.json"
        if cache.is_file():
            return json.loads(cache.read_text(encoding="utf-8"))
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="marathon-stryker-") as tmp:
            tree = Path(tmp) / "tree"
            shutil.copytree(reference, tree, ignore=shutil.ignore_patterns(".git", "node_modules"))
            config_file = Path(tmp) / "stryker.config.json"
            config_file.write_text(json.dumps(stryker_config(config), indent=2), encoding="utf-8")
            result = discover(tree, config_file, self.tool_dir)
        cache.with_suffix(".tmp").write_text(json.dumps(result), encoding="utf-8")
        cache.with_suffix(".tmp").replace(cache)
        return result

    def mutants(self, reference: Path, config: MutationConfig, workdir: Path) -> list[Mutant]:
        files = self._discovered(reference, config, workdir).get("files", {})
        out: list[Mutant] = []
        for file in sorted(files):
            text = _read(reference / file)
            starts = _line_starts(text)
            spans = []
            for raw in files[file].get("mutants", []):
                loc = raw["location"]
                begin = _offset(text, starts, loc["start"]["line"], loc["start"]["column"])
                end = _offset(text, starts, loc["end"]["line"], loc["end"]["column"])
                spans.append((begin, end, raw))
            spans.sort(key=lambda s: (s[0], s[1], s[2]["mutatorName"], s[2].get("replacement", "")))
            seen: dict[str, int] = {}
            for begin, end, raw in spans:
                operator = raw["mutatorName"]
                occurrence = seen.get(operator, 0)
                seen[operator] = occurrence + 1
                ident = mutant_id(file, operator, occurrence)
                ignored = raw.get("status") == "Ignored"
                reason = f"stryker: {raw.get('statusReason') or 'ignored'}" if ignored else None
                diff = ""
                if not ignored:
                    replacement = raw.get("replacement", "")
                    self._edits[ident] = (file, begin, end, text[begin:end], replacement)
                    diff = unified_diff(file, text, text[:begin] + replacement + text[end:])
                out.append(Mutant(id=ident, file=file, line=raw["location"]["start"]["line"],
                                  operator=operator, occurrence=occurrence, diff=diff,
                                  skip_reason=reason))
        return sorted(out, key=lambda m: (m.file, m.line, m.operator, m.occurrence))

    def apply(self, mutant: Mutant, tree: Path) -> None:
        edit = self._edits.get(mutant.id)
        if edit is None:
            raise MarathonError(f"mutant {mutant.id} ({mutant.file}: {mutant.operator} "
                                f"#{mutant.occurrence}) was not enumerated by this source")
        file, begin, end, before, replacement = edit
        path = tree / file
        text = _read(path)
        if text[begin:end] != before:
            raise MarathonError(f"mutant {mutant.id} ({file}: {mutant.operator} #{mutant.occurrence}) "
                                "does not apply: the file changed")
        _write(path, text[:begin] + replacement + text[end:])
