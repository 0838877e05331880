"""Finding (and if need be building) the control-plane binaries.

Versions are pinned in exactly one place, `.ci/build-k8s.sh`; this module asks the script
where its cache directory is instead of repeating them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import BinariesUnavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / ".ci" / "build-k8s.sh"


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the executables a control plane runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path

    @classmethod
    def in_dir(cls, bin_dir: Path) -> Binaries:
        return cls(
            etcd=bin_dir / "etcd",
            kube_apiserver=bin_dir / "kube-apiserver",
            kube_controller_manager=bin_dir / "kube-controller-manager",
            kube_scheduler=bin_dir / "kube-scheduler",
            kwok=bin_dir / "kwok",
        )

    def missing(self) -> list[Path]:
        paths = [
            self.etcd,
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kwok,
        ]
        return [p for p in paths if not p.is_file()]


def cache_bin_dir() -> Path:
    """The build script's output directory for the pinned versions (may not exist yet)."""
    result = _run_script("--print-bin-dir", capture=True)
    return Path(result.strip())


def build() -> Path:
    """Run the build script (a no-op when its stamp exists); return the bin dir.

    Raises:
        BinariesUnavailable: the script failed (no Go, no module proxy, compile error).
    """
    _run_script(capture=False)
    return cache_bin_dir()


def ensure_binaries(bin_dir: Path | None = None, *, build_if_missing: bool = True) -> Binaries:
    """Binaries from `bin_dir`, or from the build cache (building them if allowed).

    Raises:
        BinariesUnavailable: they are not there and could not (or may not) be built.
    """
    if bin_dir is not None:
        binaries = Binaries.in_dir(bin_dir)
        if binaries.missing():
            raise BinariesUnavailable(
                f"missing in {bin_dir}: {', '.join(p.name for p in binaries.missing())}"
            )
        return binaries
    binaries = Binaries.in_dir(cache_bin_dir())
    if not binaries.missing():
        return binaries
    if not build_if_missing:
        raise BinariesUnavailable(
            f"control-plane binaries not built ({binaries.missing()[0].parent}); run {BUILD_SCRIPT}"
        )
    binaries = Binaries.in_dir(build())
    if binaries.missing():
        raise BinariesUnavailable(
            f"{BUILD_SCRIPT} finished but these are missing: {binaries.missing()}"
        )
    return binaries


def _run_script(*args: str, capture: bool) -> str:
    if not BUILD_SCRIPT.is_file():
        raise BinariesUnavailable(f"build script not found: {BUILD_SCRIPT}")
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT), *args], capture_output=capture, text=True, check=True
        )
    # A failed build (no Go, no module proxy, compile error) means "unavailable here".
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or "").strip()[-2000:]
        raise BinariesUnavailable(
            f"{BUILD_SCRIPT} {' '.join(args)} failed (exit {e.returncode}) {detail}"
        ) from e
    return result.stdout or ""
