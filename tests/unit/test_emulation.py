"""qemu-user emulation through the host's real binfmt_misc.

These tests read (and, as root, write) the kernel's /proc/sys/fs/binfmt_misc.
Handlers they register themselves carry names of their own and the magic of an
architecture polyarch never runs (m68k), and are removed afterwards, so other
tests running at the same time are not disturbed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from engines import REPO_ROOT, tiny_program

from polyarch.emulation import (
    BINFMT_CONF_DIR,
    BINFMT_DIR,
    handler_status,
    install_handlers,
    register_handler,
    require_runnable,
    runs_natively,
    unregister_handler,
)
from polyarch.engine import Engine
from polyarch.errors import EmulationError
from polyarch.platforms import native_system, parse_system
from polyarch.workflows.doctor import diagnose, diagnose_with_kernel

NATIVE = native_system()
FOREIGN = parse_system("aarch64-linux" if NATIVE.name == "x86_64-linux" else "x86_64-linux")
S390X = parse_system("s390x-linux")
M68K_CONF = BINFMT_CONF_DIR / "qemu-m68k.conf"
needs_root = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="registering handlers needs root on Linux",
)
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads this Linux kernel's binfmt_misc"
)


@pytest.fixture
def own_handler() -> Iterator[str]:
    """A binfmt_misc handler name that belongs to this test; unregistered afterwards."""
    name = f"polyarch-test-{uuid.uuid4().hex[:8]}"
    yield name
    if (BINFMT_DIR / name).exists():
        unregister_handler(name)


@pytest.mark.usefixtures("emulation_ready")
def test_foreign_handler_is_registered_with_the_fix_binary_flag() -> None:
    status = require_runnable(FOREIGN)
    assert (status.native, status.registered, status.enabled, status.fix_binary) == (
        False,
        True,
        True,
        True,
    )
    assert status.interpreter is not None and Path(status.interpreter).exists()
    assert status.runnable


@pytest.mark.usefixtures("emulation_ready")
def test_foreign_binary_runs_directly_through_binfmt(tmp_path: Path) -> None:
    arch = "arm64" if FOREIGN.name == "aarch64-linux" else "amd64"
    program = tmp_path / "hello"
    program.write_bytes(tiny_program(arch, b"hello through qemu\n"))
    program.chmod(0o755)
    result = subprocess.run([program, "one"], capture_output=True, timeout=30, check=False)
    assert (result.returncode, result.stdout) == (1, b"hello through qemu\n")


@pytest.mark.usefixtures("emulation_ready")
def test_installing_handlers_again_changes_nothing() -> None:
    before = handler_status(FOREIGN)
    done = install_handlers([FOREIGN, NATIVE])
    assert done == [
        f"{FOREIGN}: qemu-{FOREIGN.qemu_name} already registered with the F flag",
        f"{NATIVE}: runs natively, no handler needed",
    ]
    assert handler_status(FOREIGN) == before


def test_native_systems_need_no_handler() -> None:
    x86_64 = parse_system("x86_64-linux")
    assert require_runnable(parse_system("i686-linux"), native=x86_64).native
    assert require_runnable(x86_64, native=x86_64).native
    assert not runs_natively(parse_system("aarch64-linux"), x86_64)
    assert not runs_natively(x86_64, parse_system("aarch64-linux"))


@linux_only
def test_system_without_handler_is_refused_with_install_advice(own_handler: str) -> None:
    # The real binfmt_misc, asked for a handler name nobody registered: what a host
    # without qemu handlers looks like, without unregistering anything shared.
    with pytest.raises(EmulationError) as caught:
        require_runnable(S390X, handler=own_handler)
    assert str(caught.value) == (
        "no binfmt_misc handler for s390x-linux (run `polyarch emulation install` as root "
        "(needs qemu-user-static: apt-get install qemu-user-static))"
    )
    assert caught.value.exit_code == 21


@linux_only
def test_missing_qemu_is_named_before_the_missing_handler(
    own_handler: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-*-static on PATH
    status = handler_status(S390X, handler=own_handler)
    assert not status.qemu_installed
    with pytest.raises(EmulationError, match="qemu-user-static is not installed") as caught:
        require_runnable(S390X, handler=own_handler)
    assert "apt-get install qemu-user-static, then run `polyarch emulation install`" in str(
        caught.value
    )


def test_unmounted_binfmt_misc_is_named(tmp_path: Path) -> None:
    # An unmounted /proc/sys/fs/binfmt_misc is an empty directory; an empty directory
    # stands in for it, because unmounting the real one would break every other test.
    with pytest.raises(EmulationError, match="binfmt_misc is not mounted at") as caught:
        require_runnable(S390X, binfmt_dir=tmp_path)
    assert "mounts binfmt_misc" in str(caught.value)
    assert not handler_status(S390X, binfmt_dir=tmp_path).binfmt_mounted


@needs_root
def test_handler_without_fix_binary_flag_is_refused_then_re_registered(own_handler: str) -> None:
    line = next(x for x in M68K_CONF.read_text().splitlines() if x.startswith(":"))
    fields = line.split(":")
    fields[1], fields[7] = own_handler, ""  # our name, no flags at all
    (BINFMT_DIR / "register").write_text(":".join(fields) + "\n")
    status = handler_status(S390X, handler=own_handler)
    assert status.registered and not status.fix_binary

    with pytest.raises(EmulationError, match="lacks the F \\(fix-binary\\) flag") as caught:
        require_runnable(S390X, handler=own_handler)
    assert "polyarch emulation install" in str(caught.value)

    done = register_handler(own_handler, M68K_CONF)
    assert done.startswith(f"re-registered {own_handler} -> ")
    assert done.endswith("F)")
    assert require_runnable(S390X, handler=own_handler).fix_binary
    assert register_handler(own_handler, M68K_CONF) == (
        f"{own_handler} already registered with the F flag"
    )


def test_registration_from_a_missing_binfmt_conf_says_what_to_install(
    own_handler: str, tmp_path: Path
) -> None:
    with pytest.raises(EmulationError, match="is missing") as caught:
        register_handler(own_handler, tmp_path / "qemu-nothing.conf")
    assert "apt-get install qemu-user-static" in str(caught.value)
    assert not (BINFMT_DIR / own_handler).exists()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not Path("/usr/bin/python3").exists(),
    reason="needs root to drop to another user, setpriv and the system python3",
)
def test_registering_a_handler_as_a_normal_user_asks_for_root(own_handler: str) -> None:
    # polyarch's emulation code needs only the standard library, so the system
    # python (readable by any user) can run it as nobody.
    script = (
        "from pathlib import Path\n"
        "from polyarch.emulation import register_handler\n"
        "from polyarch.errors import EmulationError\n"
        "try:\n"
        f"    register_handler({own_handler!r}, Path({str(M68K_CONF)!r}))\n"
        "except EmulationError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ],
        env={"PYTHONPATH": str(REPO_ROOT / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == (
        "registering binfmt_misc handlers needs root (run `sudo polyarch emulation install`)"
    ), result.stderr
    assert not (BINFMT_DIR / own_handler).exists()


@pytest.mark.usefixtures("emulation_ready")
def test_doctor_reports_engine_handler_and_flag_per_system(
    docker_engine: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLYARCH_ENGINE", raising=False)
    rows = {row.system.name: row for row in diagnose([NATIVE, FOREIGN])}
    native, foreign = rows[NATIVE.name], rows[FOREIGN.name]
    assert (native.can_run, native.handler, native.fix_binary, native.advice) == (
        True,
        "native",
        None,
        None,
    )
    assert foreign.can_run and foreign.fix_binary is True
    assert foreign.handler == handler_status(FOREIGN).interpreter
    assert foreign.engine_ok and foreign.engine is not None


def test_doctor_without_engine_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLYARCH_ENGINE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    (row,) = diagnose([NATIVE])
    assert (row.can_run, row.engine_ok, row.engine) == (False, False, None)
    assert row.advice is not None and "apt-get install podman" in row.advice


def test_doctor_without_engine_names_the_missing_binfmt_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYARCH_ENGINE", "docker")  # chosen, and not answering:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'nobody-listens.sock'}")
    kernel, (row,) = diagnose_with_kernel(
        [S390X], binfmt_dir=tmp_path, native=parse_system("x86_64-linux")
    )
    assert "no engine answered" in kernel.reason
    assert row.can_run is False
    assert row.handler == "binfmt_misc not mounted"
    assert row.advice is not None and "binfmt_misc is not mounted" in row.advice


@pytest.mark.usefixtures("emulation_ready")
def test_doctor_asks_the_engine_when_this_host_cannot_read_binfmt(
    docker_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYARCH_ENGINE", "docker")
    monkeypatch.setenv("DOCKER_HOST", docker_engine.env["DOCKER_HOST"])
    kernel, rows = diagnose_with_kernel([NATIVE, S390X], binfmt_dir=tmp_path)
    assert kernel.kernel.startswith("the engine's kernel (linux/")
    assert f"binfmt_misc is not visible at {tmp_path}" in kernel.reason
    native, s390x = rows
    assert (native.can_run, native.handler) == (True, "native")
    assert (s390x.can_run, s390x.handler) == (None, "the engine's (probed)")
    assert s390x.advice is not None and "polyarch emulation install" in s390x.advice


def test_installing_handlers_on_a_mac_points_at_the_engines_vm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(EmulationError, match="this host runs darwin") as caught:
        install_handlers([S390X], binfmt_dir=tmp_path, native=parse_system("aarch64-linux"))
    assert "polyarch doctor" in str(caught.value)


def test_doctor_on_a_mac_without_engine_says_so_instead_of_reading_binfmt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("POLYARCH_ENGINE", "docker")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'nobody-listens.sock'}")
    kernel, (row,) = diagnose_with_kernel([FOREIGN])
    assert kernel.reason == "no engine answered, and this host runs darwin"
    assert (row.can_run, row.handler) == (False, "no engine")
    assert row.advice is not None and "docker daemon not answering" in row.advice
    assert "binfmt" not in row.advice
