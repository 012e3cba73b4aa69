"""pytest fixtures for the guest-eye tests (marker ``guest``).

``guest_image`` (session): the probe kernel + initramfs (tests/guest_image.py),
fetched into the cache when missing.  It skips the tests that use it when it
cannot be had, unless TOPO_SOLVE_REQUIRE_LIBVIRT=1 (CI), then it fails.

``guest_virt`` (session): ``(virt type, why)``: 'kvm' where the stock kernel
boots under KVM, else 'qemu' (TCG); the terminal summary says which.

``guest_dir`` (session): a folder for consoles, nvram and disk files.

``guest_facts``: a dict the measuring tests fill with what they measured; the
terminal summary prints it, and ``TOPO_SOLVE_GUEST_FACTS=FILE`` writes it as
JSON (scripts/guest_facts.py turns that into docs/conformance.md's section).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

__all__ = ["guest_image", "guest_image_aarch64", "guest_virt", "guest_dir", "guest_facts"]

FACTS: dict[str, object] = {}
_VIRT: list[tuple[str, str]] = []
_GUEST_IDS: set[str] = set()  # node ids of the tests marked `guest`


def pytest_collection_modifyitems(session, config, items):
    # by marker, not by keyword: a checkout in a folder named "guest" makes every test's
    # keywords hold "guest"
    _GUEST_IDS.update(it.nodeid for it in items if it.get_closest_marker("guest"))


def _host_virsh(judge_registry):
    """The host's libvirt (the guest tests run on libvirt 9.0 + QEMU 7.2, the HOST judge)."""
    from tests.libvirt_fixtures import HOST

    return judge_registry.get(HOST).virsh()  # skips (or fails under CI) when it cannot be used


def _no_image(reason: str):
    from tests.libvirt_fixtures import REQUIRE_ENV, _required

    if _required():
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(f"{reason} (set {REQUIRE_ENV}=1 to make this an error)")


@pytest.fixture(scope="session")
def guest_image(judge_registry):
    from tests.guest_image import ImageUnavailable, ensure_image

    _host_virsh(judge_registry)
    try:
        return ensure_image("x86_64")
    except ImageUnavailable as exc:
        _no_image(f"no guest image: {exc} (run .ci/guest-image)")


@pytest.fixture(scope="session")
def guest_image_aarch64(judge_registry):
    """The arm64 kernel (linux-image-arm64) and busybox, booted under TCG on virt."""
    from tests.guest_image import ImageUnavailable, ensure_image

    _host_virsh(judge_registry)
    try:
        return ensure_image("aarch64")
    except ImageUnavailable as exc:
        _no_image(f"no aarch64 guest image: {exc} (run .ci/guest-image)")


@pytest.fixture(scope="session")
def guest_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("guests")


@pytest.fixture(scope="session")
def guest_virt(judge_registry, guest_image, guest_dir):
    from tests.guest_run import virt_type

    ans = virt_type(_host_virsh(judge_registry), guest_image, guest_dir)
    _VIRT.append(ans)
    FACTS["virt"] = {"type": ans[0], "why": ans[1]}
    return ans


@pytest.fixture
def guest_facts(guest_image, guest_virt):
    FACTS.setdefault("kernel", guest_image.package)
    return FACTS


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for rep in terminalreporter.stats.get(outcome, []):
            if rep.nodeid in _GUEST_IDS and (rep.when == "call" or outcome in ("skipped", "error")):
                counts[outcome] = counts.get(outcome, 0) + 1
    if not counts:
        return
    text = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    how = f" under {'KVM' if _VIRT[0][0] == 'kvm' else 'TCG'} ({_VIRT[0][1]})" if _VIRT else ""
    terminalreporter.write_line(f"guest-eye tests: {text}{how}")
    for key, value in sorted(FACTS.items()):
        if key not in ("virt",):
            terminalreporter.write_line(f"  measured {key}: {json.dumps(value, sort_keys=True)}")
    out = os.environ.get("TOPO_SOLVE_GUEST_FACTS")
    if out:
        old = {}
        if Path(out).exists():
            try:
                old = json.loads(Path(out).read_text())
            except ValueError:
                old = {}
        old.update(FACTS)
        tmp = Path(out).with_suffix(".tmp")
        tmp.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
        tmp.rename(out)
