"""Base class of a ``tfmdl`` subcommand."""

from __future__ import annotations

from typing import List

from absl import flags


class Command:
    """A subcommand: ``name`` ("data synth"), ``summary``, its flags and ``run``."""

    name = ""
    summary = ""

    def __init__(self):
        self._flag_names: List[str] = []

    def flags(self, fv: flags.FlagValues) -> None:
        """Defines the command's flags (``DEFINE_*(..., flag_values=fv)``)."""

    def define_flags(self, fv: flags.FlagValues) -> None:
        before = set(fv)
        self.flags(fv)
        self._flag_names = sorted(set(fv) - before)

    def help_text(self, fv: flags.FlagValues) -> str:
        lines = [f"tfmdl {self.name}: {self.summary}", ""]
        doc = (self.__doc__ or "").strip()
        if doc:
            lines += [doc, ""]
        lines.append("flags:")
        for name in self._flag_names:
            flag = fv[name]
            default = "" if flag.default is None else f" (default: {flag.default_as_str})"
            lines.append(f"  --{name}: {flag.help}{default}")
        return "\n".join(lines)

    def run(self, fv: flags.FlagValues) -> int:
        raise NotImplementedError
