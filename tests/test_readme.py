"""The README's console examples are what topo-solve prints today.

Every ``$ topo-solve ...`` line in a ```console block is run in a scratch folder
holding the repository's specs/, and its output (stdout and stderr; the examples
never show both) is compared with the lines the README shows under it.  A line
ending in ``...`` matches any line it begins; wall-clock figures ("0.3 s (17
specs/s)") are masked.  ``$ ls DIR`` lines check the files are there; other
commands (virsh) are not run.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
TIMING = re.compile(r"\d+(\.\d+)? s \(\d+ specs/s\)")


def _examples() -> list[tuple[str, list[str]]]:
    out = []
    for block in re.findall(r"```console\n(.*?)```", README, re.S):
        command = None
        for line in block.splitlines():
            if line.startswith("$ "):
                command = [line[2:], []]
                out.append(command)
            elif command is not None:
                command[1].append(line)
    return [(c, lines) for c, lines in out if c.split()[0] in ("topo-solve", "ls")]


EXAMPLES = _examples()


def test_the_readme_has_examples():
    assert len([c for c, _ in EXAMPLES if c.startswith("topo-solve")]) >= 4


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "specs", d / "specs")
    return d


@pytest.mark.parametrize("command, expected", EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_console_example(command, expected, scratch):
    argv = shlex.split(command)
    if argv[0] == "ls":
        assert sorted(p.name for p in (scratch / argv[1]).iterdir()) == sorted(" ".join(expected).split())
        return
    if ">" in argv:  # stdout to a file, as the example says
        argv = argv[: argv.index(">")]
    proc = subprocess.run([sys.executable, "-m", "topo_solve", *argv[1:]], capture_output=True, text=True,
                          cwd=scratch, timeout=120)
    shown = (proc.stdout if ">" not in command else "") + proc.stderr
    got = [TIMING.sub("T", line) for line in shown.splitlines()]
    assert len(got) == len(expected), "\n".join(got)
    for want, line in zip(expected, got):
        want = TIMING.sub("T", want)
        if want.endswith("..."):
            assert line.startswith(want[:-3].rstrip()), (want, line)
        else:
            assert line == want


def test_the_readme_picture_is_what_topo_solve_draws_now():
    """The README shows docs/web-01.svg; it is `topo-solve specs/q35-web.yaml --emit svg` as of now
    (regenerate it with that command and -o docs/web-01.svg --force when the drawing changes)."""
    assert "](docs/web-01.svg)" in README
    proc = subprocess.run([sys.executable, "-m", "topo_solve", "specs/q35-web.yaml", "--emit", "svg", "-q"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (REPO / "docs" / "web-01.svg").read_text() == proc.stdout
