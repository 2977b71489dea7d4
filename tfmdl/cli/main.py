"""The ``tfmdl`` command: an absl app with subcommands.

``tfmdl data synth --preset=feed ...``: the leading words pick a command; the
rest are that command's absl flags. Unknown flags are errors with absl's
"Did you mean" suggestion; ``tfmdl`` alone lists the commands and
``tfmdl <command> --help`` describes one.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import Dict, List, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tfmdl.cli import benchmark_commands  # noqa: E402
from tfmdl.cli import data_commands  # noqa: E402
from tfmdl.cli import eval_commands  # noqa: E402
from tfmdl.cli import model_commands  # noqa: E402
from tfmdl.cli import plot_commands  # noqa: E402
from tfmdl.cli import serving_commands  # noqa: E402
from tfmdl.cli import suite_commands  # noqa: E402
from tfmdl.cli import train_commands  # noqa: E402
from tfmdl.cli.command import Command  # noqa: E402

FLAGS = flags.FLAGS


def _commands() -> Dict[Tuple[str, ...], Command]:
    out = {}
    for module in (data_commands, model_commands, train_commands, eval_commands,
                   serving_commands, benchmark_commands, suite_commands, plot_commands):
        for cmd in module.COMMANDS:
            out[tuple(cmd.name.split())] = cmd
    return out


def _usage(commands) -> str:
    lines = ["usage: tfmdl <command> [--flag=value ...]", "", "commands:"]
    width = max(len(" ".join(k)) for k in commands)
    for key, cmd in sorted(commands.items()):
        lines.append(f"  {' '.join(key):<{width}}  {cmd.summary}")
    lines.append("")
    lines.append("tfmdl <command> --help describes a command's flags.")
    return "\n".join(lines)


_SELECTED: List[Command] = []


def _parse(argv: List[str]) -> List[str]:
    commands = _commands()
    words, i = [], 1
    while i < len(argv) and not argv[i].startswith("-"):
        words.append(argv[i])
        i += 1
    if not words:
        if any(a in ("-h", "--help", "--helpshort") for a in argv[1:]) or len(argv) == 1:
            print(_usage(commands))
            sys.exit(0 if len(argv) > 1 else 1)
    key = tuple(words)
    if key not in commands:
        names = [" ".join(k) for k in commands]
        close = difflib.get_close_matches(" ".join(words), names, n=1, cutoff=0.4)
        hint = f" Did you mean 'tfmdl {close[0]}'?" if close else ""
        sys.stderr.write(f"tfmdl: unknown command {' '.join(words)!r}.{hint}\n\n"
                         f"{_usage(commands)}\n")
        sys.exit(2)
    cmd = commands[key]
    cmd.define_flags(FLAGS)
    if any(a in ("-h", "--help", "--helpshort") for a in argv[i:]):
        print(cmd.help_text(FLAGS))
        sys.exit(0)
    _SELECTED.append(cmd)
    try:
        return FLAGS([argv[0]] + argv[i:])
    except flags.Error as exc:   # unknown flag, bad value, missing required flag
        text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        sys.stderr.write(f"tfmdl {' '.join(words)}: {text} ('tfmdl {' '.join(words)} --help' "
                         f"lists its flags)\n")
        sys.exit(2)


def _main(argv: List[str]) -> int:
    from absl import logging  # pylint: disable=g-import-not-at-top

    # TensorFlow logs checkpoint internals at INFO through absl; keep the output readable
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; every option is a --flag=value.")
    cmd = _SELECTED[0]
    try:
        return cmd.run(FLAGS) or 0
    except (OSError, tf_errors().OpError) as exc:
        # a file-system fault (read-only or missing directory, a file where a
        # directory should be) or a TensorFlow I/O error: one line naming the path
        # and exit 2; TFMDL_TRACEBACK=1 shows the traceback for a bug report
        if os.environ.get(TRACEBACK_ENV):
            raise
        sys.stderr.write(f"tfmdl {cmd.name}: {one_line(exc)} (set {TRACEBACK_ENV}=1 for "
                         f"the traceback)\n")
        return 2


TRACEBACK_ENV = "TFMDL_TRACEBACK"


def tf_errors():
    """``tf.errors``, imported when a command has run (start-up stays TF-free)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    return tf.errors


def one_line(exc: BaseException) -> str:
    """``exc`` as one line, its type first: ``PermissionError: [Errno 13] Permission
    denied: 'm/config.yaml'``, or a TensorFlow error's first message line."""
    text = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
    return text.strip().splitlines()[0]


def run() -> None:
    """Console entry point."""
    try:
        app.run(_main, flags_parser=_parse)
    except SystemExit as exc:
        _exit_after_tensorflow_io(exc)
        raise


def _exit_after_tensorflow_io(exc: SystemExit) -> None:
    """Exits at once, with ``exc``'s code, when tensorflow-io was loaded.

    tensorflow-io's bundled AWS SDK aborts in C++ static destructors at interpreter
    exit ("pure virtual method called", exit code 134) after its S3 client has
    been used, which would turn a successful ``tfmdl train --model_dir=s3://...``
    into a failure. Python's own exit work (flushing output and logs) is done
    here; only the destructors are skipped.
    """
    from tfmdl.pipelines import filesystems  # pylint: disable=g-import-not-at-top

    if not filesystems.tensorflow_io_loaded():
        return
    code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    import logging  # pylint: disable=g-import-not-at-top

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


if __name__ == "__main__":
    run()
