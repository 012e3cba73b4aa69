#!/usr/bin/env python3
"""A coverage-guided driver for the same generators and checks: atheris (libFuzzer for Python).

    pip install atheris        # not a dependency of topo-solve or of its tests
    python benchmarks/fuzz_atheris.py spec -max_total_time=600 -artifact_prefix=fuzz-findings/
    python benchmarks/fuzz_atheris.py xml -max_total_time=600
    python benchmarks/fuzz_atheris.py spec-raw -max_total_time=600   # the input bytes are the spec itself

``spec`` and ``xml`` feed libFuzzer's bytes to the structure-aware generators of
tests/fuzz/ (every choice read from atheris' FuzzedDataProvider), so coverage steers the
mutations; ``spec-raw`` and ``xml-raw`` use the bytes as the file, seeded from the
repository's documents.  Coverage feedback needs the code in this process, so the CLI's
``main()`` runs here, not in a forked child: an exit 3 (not a known open fault), a traceback,
or an escape from ``main()`` is a crash libFuzzer saves; ``-timeout`` and ``-rss_limit_mb``
are libFuzzer's own (defaults here: 10 s, 2048 MB).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

try:
    import atheris
except ImportError:  # pragma: no cover
    sys.exit("atheris is not installed: pip install atheris (it is not a dependency of topo-solve)")

with atheris.instrument_imports(include=["topo_solve"]):
    import topo_solve.batch  # noqa: F401
    import topo_solve.cli
    import topo_solve.domain.edit  # noqa: F401
    import topo_solve.domain.parse  # noqa: F401
    import topo_solve.domain.plan  # noqa: F401
    import topo_solve.domain.read  # noqa: F401
    import topo_solve.extend  # noqa: F401
    import topo_solve.files  # noqa: F401
    import topo_solve.solve  # noqa: F401
    import topo_solve.spec  # noqa: F401
    import topo_solve.verify  # noqa: F401
    import topo_solve.yaml_read  # noqa: F401

from tests.fuzz.choose import AtherisChooser  # noqa: E402
from tests.fuzz.gen_spec import DOMAIN_FILE, spec_case  # noqa: E402
from tests.fuzz.gen_xml import request_options, seed_domains, xml_case  # noqa: E402
from tests.fuzz.known import classify  # noqa: E402
from tests.fuzz.oracle import Problem  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="topo-atheris-"))
MODE = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "spec"


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            topo_solve.cli.main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
    return code, out.getvalue() + err.getvalue()


def _check(argv: list[str], data: bytes, kind: str, what: str) -> None:
    code, output = _run(argv)
    problems = []
    if code not in (0, 1, 2):
        problems.append(Problem("exit3", f"exit {code}: {output[-400:]}", argv))
    if "Traceback (most recent call last)" in output:
        problems.append(Problem("traceback", output[-600:], argv))
    new = [p for p in classify(problems, data, kind) if not p.known]
    if new:
        raise RuntimeError(f"{what}\n" + "\n".join(str(p) for p in new))


def _clean() -> None:
    for p in WORK.iterdir():
        if p.is_file() or p.is_symlink():
            p.unlink()


def one_input(raw: bytes) -> None:
    _clean()
    fdp = atheris.FuzzedDataProvider(raw)
    if MODE in ("spec", "spec-raw"):
        if MODE == "spec":
            case = spec_case(AtherisChooser(fdp))
            data, what = case.data, case.describe()
        else:
            data, what = raw, "raw spec bytes"
        (WORK / "spec.yaml").write_bytes(data)
        (WORK / DOMAIN_FILE).write_bytes(seed_domains()[0][1])
        _check(["plan", str(WORK / "spec.yaml"), "-q", "-o", str(WORK / "out.xml")], data, "spec", what)
    else:
        if MODE == "xml":
            case = xml_case(AtherisChooser(fdp))
            data, what, hotplug = case.data, case.describe(), case.hotplug
        else:
            data, what = raw, "raw XML bytes"
            hotplug = request_options(AtherisChooser(atheris.FuzzedDataProvider(raw[-16:])))
        path = WORK / "guest.xml"
        path.write_bytes(data)
        _check(["audit", str(path)], data, "xml", what)
        _check(["extend", str(path), "-q", "-o", str(WORK / "out.xml")] + [x for h in hotplug
                                                                          for x in ("--hotplug", h)], data, "xml", what)


def _seed_corpus() -> str:
    """A corpus folder for the raw modes: the repository's specs or domains."""
    folder = Path(tempfile.mkdtemp(prefix="topo-atheris-corpus-"))
    sources = (sorted((REPO / "specs").glob("**/*.yaml")) if MODE == "spec-raw"
               else sorted((REPO / "specs" / "domains").glob("*.xml")) + sorted((REPO / "tests" / "golden").glob("*.xml")))
    for i, p in enumerate(sources):
        (folder / f"seed-{i}").write_bytes(p.read_bytes())
    return str(folder)


if __name__ == "__main__":
    args = [a for a in sys.argv if a != MODE]
    if not any(a.startswith("-timeout") for a in args):
        args.append("-timeout=10")
    if not any(a.startswith("-rss_limit_mb") for a in args):
        args.append("-rss_limit_mb=2048")
    if MODE.endswith("-raw") and not any(not a.startswith("-") for a in args[1:]):
        args.append(_seed_corpus())
    os.environ.setdefault("PYTHONHASHSEED", "0")
    atheris.Setup(args, one_input)
    atheris.Fuzz()
