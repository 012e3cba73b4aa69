"""The SVG picture in a real browser: headless Chromium (Debian's chromium package) draws it.

`topo-solve ... --emit svg` is written directly (no drawing library), so this is the check that a
browser takes it: Chromium renders each picture to a PNG screenshot, and the screenshot must hold
the picture: the box colours of the root bus, the ports, the devices and the free positions (and
a NUMA node's band), in boxes of real size, on a page that is not blank.  The PNG is decoded here
(zlib and the five PNG filters; no imaging library).

Chromium is started the way a CI machine allows: headless, no sandbox (root), no GPU, a fresh
profile in a temporary folder, nothing fetched from the network.  Without Chromium the test skips,
unless TOPO_SOLVE_REQUIRE_LIBVIRT=1 (CI, whose .ci/run installs chromium), which makes it fail.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import textwrap
import zlib
from collections import Counter
from pathlib import Path

import pytest

from topo_solve.emit.picture import _STYLE, _NUMA_FILL, svg
from topo_solve.rules import FAMILIES
from topo_solve.solve import solve
from topo_solve.spec import load_request

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 1200, 900


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        message = "chromium is not installed (Debian packages chromium, chromium-driver)"
        if os.environ.get("TOPO_SOLVE_REQUIRE_LIBVIRT", "") not in ("", "0"):
            pytest.fail(f"TOPO_SOLVE_REQUIRE_LIBVIRT=1 but {message}", pytrace=False)
        pytest.skip(message)
    return exe


def screenshot(exe: str, page: Path, out: Path, profile: Path) -> None:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
           f"--screenshot={out}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and out.exists(), r.stderr[-2000:]


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(width, height, RGB pixels row by row) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, head = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = head
    assert depth == 8 and colour in (2, 6) and interlace == 0, head
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    pixels = []
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        pixels.extend(tuple(line[x * bpp:x * bpp + 3]) for x in range(width))
        prev = line
    return width, height, pixels


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


NUMA = """\
    name: numa
    machine: q35
    vcpus: 2
    memory: 512
    numa: {nodes: 2}
    devices:
      - {name: nic, model: virtio-net}
      - {name: gpu, model: hostdev, numa_node: 1}
    hotplug:
      - {class: pcie, count: 2}
      - {class: pcie, count: 2, numa_node: 0}
      - {class: pci, count: 1, numa_node: 1}
"""


@pytest.mark.parametrize("case", ["q35-web", "numa"])
def test_chromium_draws_the_topology(case, tmp_path):
    exe = _chromium()
    if case == "numa":
        spec = tmp_path / "numa.yaml"
        spec.write_text(textwrap.dedent(NUMA))
    else:
        spec = ROOT / "specs" / f"{case}.yaml"
    plan = solve(load_request(spec))
    page = tmp_path / f"{case}.svg"
    page.write_text(svg(plan.layout, FAMILIES[plan.layout.family], f"{plan.problem.name} ({plan.problem.machine})"))
    shot = tmp_path / f"{case}.png"
    screenshot(exe, page, shot, tmp_path / "profile")
    width, height, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    counts = Counter(pixels)
    white = counts[(255, 255, 255)]
    assert white < len(pixels) * 0.97, "the page is blank"
    # the fills of the boxes, each over at least a box's worth of pixels (a box is ~100 x 16 px)
    wanted = {kind: _rgb(_STYLE[kind][1]) for kind in ("root", "port", "device", "free-pcie")}
    if case == "numa":
        wanted.update({f"NUMA node {n}": _rgb(_NUMA_FILL[n]) for n in (0, 1)})
        wanted["expander"] = _rgb(_STYLE["expander"][1])
    for kind, colour in wanted.items():
        assert counts[colour] > 800, f"no {kind} box drawn ({colour}: {counts[colour]} px)"
    # text: dark pixels (glyphs) in the picture's part of the page
    dark = sum(n for (r, g, b), n in counts.items() if r + g + b < 200)
    assert dark > 2000, "no text drawn"
