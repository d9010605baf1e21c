"""The compilers, flags and emulator the C export uses, in one place (the Makefile gets the same).

``HOST_CFLAGS`` is what every export is verified with; ``ARM_CFLAGS`` + ``ARM_FLOAT`` the
Cortex-M4F build (hard float: the FPU of a Cortex-M4F; ``-mfloat-abi=soft`` for an M4 without);
the QEMU flags run the harness on the emulated MPS2 AN386 board (Cortex-M4) with semihosting.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOST_CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")
ARM_CC = "arm-none-eabi-gcc"
ARM_SIZE = "arm-none-eabi-size"
ARM_CFLAGS = ("-std=c99", "-mcpu=cortex-m4", "-mthumb", "-Os", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections")
ARM_FLOAT = ("-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
ARM_LINK = ("--specs=rdimon.specs", "-T", "cortex-m/mps2-an386.ld", "-Wl,--gc-sections")
QEMU = "qemu-system-arm"
QEMU_FLAGS = ("-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none", "-semihosting-config", "enable=on,target=native")


@dataclass(frozen=True)
class Sizes:
    """Berkeley ``size`` of an object: text (code + const data), data, bss (bytes)."""

    text: int
    data: int
    bss: int

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss


def host_compiler() -> str | None:
    """The host C compiler: $CC if set, else ``cc``; None when it is not installed."""
    name = os.environ.get("CC") or "cc"
    return shutil.which(name)


def run(cmd: list[str], cwd: Path, timeout: float = 300, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd``, capturing output (bytes), never raising on a non-zero exit."""
    return subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, timeout=timeout, check=False)


def size_of(tool: str, obj: Path) -> Sizes | None:
    """``size`` (Berkeley format) of ``obj``; None when the tool is missing or fails."""
    if shutil.which(tool) is None:
        return None
    proc = run([tool, str(obj)], cwd=obj.parent)
    lines = proc.stdout.decode(errors="replace").splitlines()
    if proc.returncode != 0 or len(lines) < 2:
        return None
    text, data, bss = (int(v) for v in lines[1].split()[:3])
    return Sizes(text, data, bss)


def version(tool: str) -> str:
    """First line of ``tool --version`` ('' when it fails)."""
    try:
        proc = run([tool, "--version"], cwd=Path.cwd(), timeout=30)
    except OSError:
        return ""
    out = proc.stdout.decode(errors="replace").splitlines()
    return out[0].strip() if out else ""
