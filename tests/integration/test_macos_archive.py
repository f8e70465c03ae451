"""fd from the real archive, built the way a Mac builds it: no gpgv, no /proc, no
/usr/share/keyrings (so the Debian keys polyarch ships are used), sys.platform "darwin";
the digests must equal a normal Linux build's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from polyarch.config import RepositoryConfig
from polyarch.debian.sources import find_source

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("unshare"),
        reason="playing a Mac needs Linux, root and unshare",
    ),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
UNSHARE, UMOUNT, MOUNT = (shutil.which(p) for p in ("unshare", "umount", "mount"))
AS_A_MAC = """
import os, sys
from polyarch.cli import main
# The CLI imports its libraries lazily; those that choose a platform implementation
# when imported (urllib.request: _scproxy on a real Mac) are loaded as on this host.
import httpx, urllib.request
sys.platform = "darwin"
assert not os.path.exists("/proc/self") and not os.listdir("/usr/share/keyrings")
sys.exit(main(sys.argv[1:]))
"""


def test_fd_built_as_on_a_mac_with_the_shipped_keys_has_the_linux_digests(
    tmp_path: Path,
) -> None:
    # A Mac has no apt sources: containers.toml names the mirror (this host's, read here).
    mirror = find_source(RepositoryConfig(suite="bookworm")).url
    project = tmp_path / "containers.toml"
    text = (REPO_ROOT / "containers.toml").read_text()
    project.write_text(text.replace("[repository]\n", f'[repository]\nurl = "{mirror}"\n', 1))

    def build(out: Path, cache: Path, *, as_mac: bool) -> subprocess.CompletedProcess[str]:
        args = ["-f", str(project), "--cache-dir", str(cache), "build", "fd", "--all-systems"]
        args += ["--out", str(out)]
        if not as_mac:
            argv = [sys.executable, "-m", "polyarch", *args]
            return subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        hide = f'{MOUNT} -t tmpfs none /usr/share/keyrings && {UMOUNT} -l /proc && exec "$@"'
        argv = [str(UNSHARE), "--mount", "--propagation", "private", "--", "/bin/sh", "-c"]
        argv += [hide, "sh", sys.executable, "-c", AS_A_MAC, *args]
        env = {**os.environ, "PATH": str(tmp_path / "empty-path")}
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=900, check=False
        )

    linux = build(tmp_path / "linux", tmp_path / "cache-linux", as_mac=False)
    assert linux.returncode == 0, linux.stderr
    mac = build(tmp_path / "mac", tmp_path / "cache-mac", as_mac=True)
    assert mac.returncode == 0, mac.stderr
    for name in ("oci/index.json", "x86_64-linux.tar", "aarch64-linux.tar"):
        assert (tmp_path / "mac" / "fd" / name).read_bytes() == (
            tmp_path / "linux" / "fd" / name
        ).read_bytes(), name
