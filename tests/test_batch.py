"""``topo-solve batch`` and ``plan_many``: real spec files, real output folders.

The example specs (``specs/``, ``specs/infeasible/``) are planned next to a
broken YAML file; each XML the batch writes must be byte for byte what
``topo-solve SPEC`` prints for that spec.  Runs use ``-j 1`` (in this process)
unless the test is about the worker processes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

import topo_solve.solve
from topo_solve.batch import collect_specs, exit_code, plan_many
from topo_solve.cli import main

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
GOOD = sorted(SPECS.glob("*.yaml"))  # every one of them plans
INFEASIBLE = sorted((SPECS / "infeasible").glob("*.yaml"))
BROKEN = "name: broken\nmachine: q35\ndevices:\n  - {model: e1000]\nhotplug: []\n"  # not YAML, line 4
TWO_MISTAKES = "name: two\nmachine: q35\ndevices:\n  - {model: virtio-nett}\nhotplugs: []\n"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else code), out, err


def plan_output(spec: Path, capsys) -> str:
    """What `topo-solve SPEC` prints on stdout."""
    code, out, _ = run([str(spec), "-q"], capsys)
    assert code == 0
    return out


def plan_json(spec: Path, capsys) -> dict:
    """What `topo-solve SPEC --emit json` says of the plan."""
    code, out, _ = run([str(spec), "-q", "--emit", "json"], capsys)
    assert code == 0
    return json.loads(out)


def q35_web_as(name: str, *, shift: int = 0) -> str:
    """specs/q35-web.yaml under another guest name, ``shift`` comment lines further down."""
    text = (SPECS / "q35-web.yaml").read_text()
    text = text.replace("name: web-01", f"name: {name}")
    assert f"name: {name}" in text
    return "# copy\n" * shift + text


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "broken.yaml").write_text(BROKEN)
    (folder / "two-mistakes.yaml").write_text(TWO_MISTAKES)
    return folder


# -- the command -------------------------------------------------------------------

def test_examples_and_bad_specs_in_worker_processes(tmp_path, bad, capsys):
    """The console entry point in a new process with two workers: outputs, table, report, messages, exit code."""
    out, report = tmp_path / "out", tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "topo_solve", "batch", "specs/", "specs/infeasible", str(bad),
                           "-o", str(out), "-j", "2", "--report", str(report)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr  # bad input wins over infeasible
    assert "Traceback" not in proc.stdout + proc.stderr

    # every good spec: its XML, parseable, with its guest name, byte for byte what `topo-solve SPEC` prints
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s.stem}.xml" for s in GOOD), \
        "outputs only for the specs that planned, and no temporary file left behind"
    for spec in GOOD:
        xml = (out / f"{spec.stem}.xml").read_text()
        assert xml == plan_output(spec, capsys), spec.name
        assert etree.fromstring(xml.encode()).findtext("name")

    # one error per problem, each naming its file; the infeasible spec explained; nothing else on stderr
    err = proc.stderr.splitlines()
    broken, two = str(bad / "broken.yaml"), str(bad / "two-mistakes.yaml")
    assert f"error: {broken}:4:18: not valid YAML: expected ',' or '}}', but got ']' (while parsing a flow mapping)" in err
    assert sum(line.startswith(f"error: {two}:") for line in err) == 2
    assert any(line.startswith(f"error: {two}:4: devices[0].model: unknown device model 'virtio-nett'")
               for line in err)
    assert any(line.startswith(f"error: {two}:5: hotplugs: unknown field") for line in err)
    assert any(line.startswith(f"error: specs/infeasible/q35-too-many.yaml: no PCI layout of guest 'too-many'")
               for line in err)
    assert all(line.startswith(("error: ", "  ")) for line in err), proc.stderr

    # the table: a row per spec in input order, then the totals
    rows = proc.stdout.splitlines()
    assert rows[0].split() == ["spec", "machine", "added", "capacity/requested", "status"]
    expected = [f"specs/{s.name}" for s in GOOD] + [f"specs/infeasible/{s.name}" for s in INFEASIBLE] + [broken, two]
    assert [r.split()[0] for r in rows[1:-2]] == expected
    statuses = [r.split()[-1] for r in rows[1:-2]]
    assert statuses == ["ok"] * len(GOOD) + ["infeasible"] * len(INFEASIBLE) + ["error", "error"]
    web = next(r for r in rows if r.startswith("specs/q35-web.yaml"))
    plan = plan_json(SPECS / "q35-web.yaml", capsys)
    added = ", ".join(f"{n} {m}" for m, n in plan["added"].items())
    cap = " ".join(f"{c} {n}/{plan['requested'][c]}" for c, n in plan["capacity"].items())
    assert re.search(rf"\bq35\s+{re.escape(added)}\s+{re.escape(cap)}\s+ok$", web), (web, added, cap)
    n = len(expected)
    assert rows[-1].startswith(f"{n} specs: {len(GOOD)} planned, {len(INFEASIBLE)} infeasible, 2 errors; ")
    # which libvirt and QEMU the specs were planned for, counted (the broken ones have none)
    labels = [plan_json(SPECS / s.name, capsys)["target"] for s in GOOD if "domain:" not in s.read_text()]
    assert rows[-2].startswith("target"), rows[-2]
    for t in labels:
        assert f"libvirt {t['libvirt']} + QEMU {t['qemu']} (" in rows[-2], (rows[-2], t)

    # the report says the same, per spec
    data = json.loads(report.read_text())
    assert (data["specs"], data["ok"], data["infeasible"], data["error"]) == (n, len(GOOD), len(INFEASIBLE), 2)
    assert data["exit_code"] == 2
    by_spec = {r["spec"]: r for r in data["results"]}
    assert list(by_spec) == expected
    assert by_spec[str(broken)]["target"] is None and by_spec["specs/q35-web.yaml"]["target"].startswith("libvirt ")
    for spec in GOOD:
        r = by_spec[f"specs/{spec.name}"]
        assert r["status"] == "ok" and r["code"] == 0 and r["output"] == str(out / f"{spec.stem}.xml")
        assert r["name"] == etree.parse(r["output"]).findtext("name")
        assert all(r["capacity"][c] >= r["requested"][c] for c in r["requested"])
    assert by_spec["specs/q35-web.yaml"]["added"] == plan["added"] != {}
    assert by_spec["specs/q35-web.yaml"]["capacity"] == plan["capacity"]
    assert by_spec["specs/infeasible/q35-too-many.yaml"]["code"] == 1
    assert by_spec[broken]["code"] == 2 and by_spec[broken]["output"] is None
    assert "virtio-nett" in by_spec[two]["message"] and "hotplugs" in by_spec[two]["message"]


@pytest.mark.parametrize(("args", "code"), [
    (["{good}"], 0),
    (["{good}", "{infeasible}"], 1),
    (["{infeasible}", "{bad}"], 2),
    (["{good}", "{tmp}/nothing-*.yaml"], 2),  # a pattern that matches nothing is bad input
    (["{tmp}/empty"], 2),  # so is a folder without specs
    (["{tmp}/missing.yaml"], 2),
])
def test_exit_code_is_the_worst_spec(args, code, tmp_path, bad, capsys):
    (tmp_path / "empty").mkdir()
    argv = [a.format(good=SPECS / "q35-web.yaml", infeasible=INFEASIBLE[0], bad=bad / "broken.yaml", tmp=tmp_path)
            for a in args]
    got, out, err = run(["batch", *argv, "-o", str(tmp_path / "out"), "-j", "1"], capsys)
    assert got == code, err
    assert "Traceback" not in out + err
    if code == 2:
        assert err.startswith("error: ")


def test_nothing_is_overwritten_without_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "q35-web.xml").write_text("old\n")
    code, _, err = run(["batch", str(SPECS), "-o", str(out), "-j", "1"], capsys)
    assert code == 2
    assert f"error: {SPECS / 'q35-web.yaml'}: {out / 'q35-web.xml'} exists; pass --force to replace it" in err
    assert (out / "q35-web.xml").read_text() == "old\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s.stem}.xml" for s in GOOD), "the others are written"

    # a second run leaves the files that hold what it would write alone (a killed batch run again goes on
    # where it stopped), and still refuses the one that differs; --force replaces it
    written = {p.name: p.stat().st_ino for p in out.iterdir()}
    code, _, err = run(["batch", str(SPECS), "-o", str(out), "-j", "1"], capsys)
    assert code == 2 and err.count("exists; pass --force") == 1 and "q35-web.xml exists" in err
    assert {p.name: p.stat().st_ino for p in out.iterdir()} == written, "identical files were not rewritten"
    code, _, _ = run(["batch", str(SPECS), "-o", str(out), "-j", "1", "--force"], capsys)
    assert code == 0
    assert (out / "q35-web.xml").read_text() == plan_output(SPECS / "q35-web.yaml", capsys)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


def test_an_existing_report_stops_the_batch_before_it_starts(tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text("old\n")
    code, _, err = run(["batch", str(SPECS), "-o", str(tmp_path / "out"), "--report", str(report)], capsys)
    assert code == 2 and f"{report} exists; pass --force" in err
    assert report.read_text() == "old\n" and not (tmp_path / "out").exists()
    code, _, _ = run(["batch", str(SPECS), "-o", str(tmp_path / "out"), "--report", str(report), "--force",
                      "-j", "1"], capsys)
    assert code == 0 and json.loads(report.read_text())["ok"] == len(GOOD)


def test_two_specs_with_one_output_name(tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "web.yaml").write_text(q35_web_as(f"web-{folder}"))
    out = tmp_path / "out"
    code, _, err = run(["batch", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out), "-j", "1"], capsys)
    assert code == 2
    assert f"error: {tmp_path / 'b' / 'web.yaml'}: its output {out / 'web.xml'} is already that of " \
           f"{tmp_path / 'a' / 'web.yaml'}" in err
    assert etree.parse(str(out / "web.xml")).findtext("name") == "web-a"


def test_a_file_named_twice_is_planned_once(tmp_path, capsys):
    spec = SPECS / "virt-arm.yaml"
    code, out, _ = run(["batch", str(spec), os.path.join(SPECS, ".", "virt-arm.yaml"), str(SPECS / "virt-*.yaml"),
                        "-o", str(tmp_path / "out"), "-j", "1"], capsys)
    assert code == 0 and out.splitlines()[-1].startswith("1 spec: 1 planned")


def test_quiet_prints_no_table(tmp_path, capsys):
    code, out, err = run(["batch", str(SPECS), "-o", str(tmp_path / "out"), "-j", "1", "-q"], capsys)
    assert code == 0 and out == "" and err == ""


def test_progress_bar_on_a_terminal(tmp_path, capsys, monkeypatch):
    """On a terminal stderr shows a progress bar (rich); the run is otherwise the same."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    code, out, _ = run(["batch", str(SPECS), "-o", str(tmp_path / "out"), "-j", "2"], capsys)
    assert code == 0 and out.splitlines()[-1].startswith(f"{len(GOOD)} specs: {len(GOOD)} planned")
    assert len(list((tmp_path / "out").iterdir())) == len(GOOD)


def test_help_names_the_exit_codes(capsys):
    code, out, _ = run(["batch", "--help"], capsys)
    text = " ".join(out.split())  # click wraps to the terminal's width
    assert code == 0 and "Exit code: 0 all planned, 1 some spec has no layout, 2 some spec" in text
    assert "-j, --jobs" in text


# -- identical problems ------------------------------------------------------------

@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """Five copies of q35-web under other names (lines shifted too), two of the infeasible spec, one pc."""
    folder = tmp_path / "fleet"
    folder.mkdir()
    for i in range(5):
        (folder / f"web-{i}.yaml").write_text(q35_web_as(f"web-{i}", shift=i))
    too_many = INFEASIBLE[0].read_text()
    for i in range(2):
        (folder / f"big-{i}.yaml").write_text(too_many.replace("name: too-many", f"name: big-{i}"))
    (folder / "legacy.yaml").write_text((SPECS / "pc-legacy.yaml").read_text())
    return folder


def test_identical_problems_are_solved_once(fleet, tmp_path, monkeypatch):
    calls = []
    real = topo_solve.solve.solve

    def counting(problem):
        calls.append(problem.name)
        return real(problem)

    monkeypatch.setattr(topo_solve.solve, "solve", counting)
    out = tmp_path / "out"
    results = {Path(r.spec).stem: r for r in plan_many(sorted(fleet.iterdir()), workers=1, outdir=out)}
    assert sorted(calls) == ["big-0", "legacy-01", "web-0"], "each distinct problem solved once, the first met"
    assert sorted(s for s, r in results.items() if r.cached) == ["big-1", "web-1", "web-2", "web-3", "web-4"]

    # each output is its own guest's: the name and the disk image path carry it, the rest is the same plan
    first = (out / "web-0.xml").read_text()
    assert "<name>web-0</name>" in first and "/web-0-root.img" in first
    for i in range(1, 5):
        xml = (out / f"web-{i}.xml").read_text()
        assert f"<name>web-{i}</name>" in xml and f"/web-{i}-root.img" in xml and "web-0" not in xml
        assert xml.replace(f"web-{i}", "web-0") == first
        assert results[f"web-{i}"].name == f"web-{i}"
    # an infeasible answer from the cache names its own guest too
    assert results["big-1"].status == "infeasible" and "guest 'big-1'" in results["big-1"].message
    assert "big-0" not in results["big-1"].message and str(fleet / "big-1.yaml") in results["big-1"].message
    assert results["big-1"].message == results["big-0"].message.replace("big-0", "big-1"), "the whole explanation"


def test_workers_report_cache_hits_and_agree_with_one_process(fleet, tmp_path, capsys):
    """-j 2 writes the same bytes as -j 1; each worker solves a problem at most once."""
    for n in range(6):  # more distinct problems, so that both workers get work
        (fleet / f"virt-{n}.yaml").write_text((SPECS / "virt-arm.yaml").read_text().replace("count: 6", f"count: {n}"))
    outs = {}
    for jobs in ("1", "2"):
        outs[jobs] = tmp_path / f"out-{jobs}"
        code, out, _ = run(["batch", str(fleet), str(SPECS), "-o", str(outs[jobs]), "-j", jobs,
                            "--report", str(tmp_path / f"report-{jobs}.json")], capsys)
        assert code == 1
    files = sorted(p.name for p in outs["1"].iterdir())
    assert files == sorted(p.name for p in outs["2"].iterdir()) and len(files) == 5 + 1 + 6 + len(GOOD)
    for name in files:
        assert (outs["1"] / name).read_bytes() == (outs["2"] / name).read_bytes(), name
    one, two = (json.loads((tmp_path / f"report-{j}.json").read_text()) for j in ("1", "2"))
    strip = [{k: v for k, v in r.items() if k not in ("cached", "output")} for r in one["results"]]
    assert strip == [{k: v for k, v in r.items() if k not in ("cached", "output")} for r in two["results"]]
    # web, big, legacy, virt-0..5, and specs/ but for q35-web.yaml and pc-legacy.yaml (copies of web and legacy)
    distinct = one["solved"]
    assert distinct == 3 + 6 + len(GOOD) - 2
    assert distinct <= two["solved"] <= 2 * distinct


# -- the Python API ------------------------------------------------------------------

def test_plan_many_without_outdir_returns_the_xml(bad, capsys):
    results = list(plan_many([SPECS / "pc-legacy.yaml", bad / "broken.yaml", INFEASIBLE[0]], workers=2))
    assert sorted(r.status for r in results) == ["error", "infeasible", "ok"]
    ok = next(r for r in results if r.status == "ok")
    assert ok.output is None and ok.xml == plan_output(SPECS / "pc-legacy.yaml", capsys)
    assert ok.name == "legacy-01" and ok.machine == "pc" and ok.added == {"pci-bridge": 1}
    assert all(r.xml is None for r in results if r.status != "ok")
    assert exit_code(results) == 2 and exit_code(r for r in results if r.status != "error") == 1


def test_plan_many_yields_as_specs_finish(tmp_path):
    """A generator: the first result arrives before the last spec is planned."""
    for i in range(40):
        (tmp_path / f"web-{i:02d}.yaml").write_text(q35_web_as(f"web-{i}"))
    stream = plan_many(sorted(tmp_path.glob("*.yaml")), workers=2, outdir=tmp_path / "out")
    first = next(stream)
    assert first.status == "ok" and os.path.exists(first.output)
    rest = list(stream)
    assert len(rest) == 39 and len(list((tmp_path / "out").iterdir())) == 40


def test_collect_specs_orders_and_dedupes(tmp_path):
    for n in ("b.yaml", "a.yml", "c.txt"):
        (tmp_path / n).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text("x")
    paths, problems = collect_specs([str(tmp_path), str(tmp_path / "b.yaml"), str(tmp_path / "**" / "*.yaml")])
    assert paths == [str(tmp_path / "a.yml"), str(tmp_path / "b.yaml"), str(tmp_path / "sub" / "d.yaml")]
    assert problems == []
    _, problems = collect_specs([str(tmp_path / "zz*.yaml")])
    assert [p.status for p in problems] == ["error"] and "no file matches" in problems[0].message


def test_an_output_folder_that_cannot_be_made(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, out, err = run(["batch", str(SPECS), "-o", str(tmp_path / "file"), "-j", "1"], capsys)
    assert code == 2 and out == ""
    assert err == f"error: {tmp_path / 'file'}: cannot create the output folder: File exists\n"
