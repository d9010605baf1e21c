"""Run a C export's Cortex-M4 build in the ``unicorn`` CPU emulator and count the instructions.

``count(elf, prefix, x)`` loads the ELF that ``make PREFIX-cm4.elf`` links (arm-none-eabi-gcc,
``-mcpu=cortex-m4 -mthumb``, hard float), calls ``PREFIX_predict`` (float32 exports) or
``PREFIX_quantize_input`` then ``PREFIX_predict_q`` (int8 exports) on one input, and returns the
instructions the emulated core executed in the inference call, the deepest stack it used, and the
outputs it wrote, which callers compare with the host build.

The count is of instructions executed, not cycles: on a Cortex-M4 most data-processing instructions
take one cycle, loads two, a taken branch two to four, so cycles are somewhat higher. Counting uses
a hook per translated basic block (its instructions decoded once, by Thumb-2 encoding length), so a
ResNet-8 inference of about 12 million MACs takes seconds, not minutes.

Needs ``unicorn`` and ``pyelftools`` (the ``bench`` extra); nothing else in layerlab imports this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerlab.errors import ExportError, require

RAM = 0x20000000
RAM_SIZE = 4 * 1024 * 1024
FLASH_SIZE = 4 * 1024 * 1024
STACK_TOP = RAM + RAM_SIZE - 16
STOP = 0x00FFFFF0  # the return address of the called function: a page mapped only to stop there
CPACR = 0xE000ED88  # Coprocessor Access Control: CP10 and CP11 full access turns the FPU on
STACK_FILL = 0xA5


@dataclass(frozen=True)
class Count:
    """One emulated inference.

    Attributes:
        instructions: executed by the inference call (``predict`` or ``predict_q``).
        stack: deepest stack it used, in bytes (measured: the stack was filled with a pattern first).
        output: ``predict``'s float32 output for the same input (to compare with the host build).
        by_function: instructions per function of the ELF (the steps, the helpers they call).
    """

    instructions: int
    stack: int
    output: np.ndarray
    by_function: dict[str, int]


def _thumb_lengths(code: bytes) -> int:
    """Instructions in a run of Thumb-2 code: a halfword starting 0b11101, 0b11110 or 0b11111 opens a
    32-bit instruction, any other is a 16-bit one."""
    count, at = 0, 0
    while at + 1 < len(code):
        half = code[at] | (code[at + 1] << 8)
        at += 4 if (half >> 11) in (0b11101, 0b11110, 0b11111) else 2
        count += 1
    return count


class Emulator:
    """The ELF loaded into a fresh emulated Cortex-M4 (see the module docstring)."""

    def __init__(self, elf: str | Path, prefix: str) -> None:
        require("unicorn", "bench", "counting Cortex-M4 instructions")
        require("elftools", "bench", "reading ELF files")
        from elftools.elf.elffile import ELFFile
        from unicorn import UC_ARCH_ARM, UC_MODE_MCLASS, UC_MODE_THUMB, Uc
        from unicorn.arm_const import UC_CPU_ARM_CORTEX_M4

        self.prefix = prefix
        self.uc = uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        uc.ctl_set_cpu_model(UC_CPU_ARM_CORTEX_M4)
        uc.mem_map(0, FLASH_SIZE)
        uc.mem_map(RAM, RAM_SIZE)
        uc.mem_map(0xE000E000, 0x1000)  # the System Control Space (CPACR lives here)
        uc.mem_map(STOP & ~0xFFF, 0x1000)
        with open(elf, "rb") as f:
            image = ELFFile(f)
            for segment in image.iter_segments():
                if segment["p_type"] == "PT_LOAD" and segment["p_memsz"]:
                    data = segment.data()
                    uc.mem_write(segment["p_vaddr"], data + b"\0" * (segment["p_memsz"] - len(data)))
            symbols = image.get_section_by_name(".symtab")
            self.symbols = {s.name: s["st_value"] for s in symbols.iter_symbols() if s.name} if symbols else {}
            functions = sorted((s["st_value"] & ~1, s["st_value"] + s["st_size"], s.name) for s in (symbols.iter_symbols() if symbols else ())
                               if s["st_info"]["type"] == "STT_FUNC" and s["st_size"])
        self._functions = functions
        self.by_function: dict[str, int] = {}
        self.heap = (self.symbols.get("end", RAM + 0x100000) + 15) & ~15
        self._enable_fpu()
        self._blocks: dict[int, int] = {}
        self.executed = 0

    def _enable_fpu(self) -> None:
        from unicorn.arm_const import UC_ARM_REG_C1_C0_2

        self.uc.mem_write(CPACR, (0xF << 20).to_bytes(4, "little"))
        try:  # unicorn 2 also models the register itself
            self.uc.reg_write(UC_ARM_REG_C1_C0_2, 0xF << 20)
        except Exception:  # noqa: BLE001 - the M profile has no coprocessor register; the memory write does it
            pass

    def symbol(self, name: str) -> int:
        if name not in self.symbols:
            raise ExportError(f"emulator: the ELF has no function {name!r}; build it with `make {self.prefix}-cm4.elf`")
        return self.symbols[name] & ~1

    def call(self, name: str, *args: int, count: bool = False) -> int:
        """Call ``name(args...)`` (up to four int/pointer arguments); return the instructions executed
        when ``count``."""
        from unicorn import UC_HOOK_BLOCK
        from unicorn.arm_const import UC_ARM_REG_LR, UC_ARM_REG_R0, UC_ARM_REG_SP

        uc = self.uc
        for reg, value in zip(range(UC_ARM_REG_R0, UC_ARM_REG_R0 + 4), args, strict=False):
            uc.reg_write(reg, value)
        uc.reg_write(UC_ARM_REG_SP, STACK_TOP)
        uc.reg_write(UC_ARM_REG_LR, STOP | 1)
        self.executed = 0
        self.by_function = {}
        hook = uc.hook_add(UC_HOOK_BLOCK, self._on_block) if count else None
        try:
            uc.emu_start(self.symbol(name) | 1, STOP, timeout=0, count=0)
        except Exception as exc:  # unicorn's UcError: say where it stopped
            raise ExportError(f"emulator: {name} stopped with {exc}") from None
        finally:
            if hook is not None:
                uc.hook_del(hook)
        return self.executed

    def _on_block(self, uc, address: int, size: int, _user) -> None:
        known = self._blocks.get(address)
        if known is None:
            known = self._blocks[address] = (_thumb_lengths(bytes(uc.mem_read(address, size))), self._function_at(address))
        n, name = known
        self.executed += n
        self.by_function[name] = self.by_function.get(name, 0) + n

    def _function_at(self, address: int) -> str:
        import bisect

        i = bisect.bisect_right(self._functions, (address, float("inf"), "")) - 1
        if i >= 0 and self._functions[i][0] <= address < self._functions[i][1]:
            return self._functions[i][2]
        return "?"

    def stack_fill(self, depth: int = 64 * 1024) -> None:
        self.uc.mem_write(STACK_TOP - depth, bytes([STACK_FILL]) * depth)

    def stack_used(self, depth: int = 64 * 1024) -> int:
        data = bytes(self.uc.mem_read(STACK_TOP - depth, depth))
        untouched = len(data) - len(data.lstrip(bytes([STACK_FILL])))
        return depth - untouched


def count(elf: str | Path, prefix: str, x: np.ndarray, *, int8: bool, input_size: int, output_size: int) -> Count:
    """Emulate one inference of the export's Cortex-M4 ELF on ``x`` (one input, float32).

    Counts ``PREFIX_predict`` for float32; for int8, ``PREFIX_predict_q`` on the input that
    ``PREFIX_quantize_input`` wrote (the int8 network alone). ``output`` is ``PREFIX_predict``'s
    float output in both cases, to compare with the host build.
    """
    emu = Emulator(elf, prefix)
    x = np.ascontiguousarray(np.asarray(x, np.float32).reshape(-1))
    if x.size != input_size:
        raise ExportError(f"emulator: input of {x.size} values, the export takes {input_size}")
    inp, out, inq = emu.heap, emu.heap + 4 * input_size + 16, emu.heap + 4 * (input_size + output_size) + 32
    emu.uc.mem_write(inp, x.astype("<f4").tobytes())
    if int8:
        emu.call(f"{prefix}_quantize_input", inp, inq)
        emu.stack_fill()
        executed = emu.call(f"{prefix}_predict_q", inq, out, count=True)
        stack, by_function = emu.stack_used(), dict(emu.by_function)
        emu.call(f"{prefix}_predict", inp, out)
    else:
        emu.stack_fill()
        executed = emu.call(f"{prefix}_predict", inp, out, count=True)
        stack, by_function = emu.stack_used(), dict(emu.by_function)
    output = np.frombuffer(bytes(emu.uc.mem_read(out, 4 * output_size)), "<f4").copy()
    return Count(executed, stack, output, by_function)
