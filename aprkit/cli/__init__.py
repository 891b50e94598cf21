"""The ``aprkit`` command line: a thin layer that parses arguments and calls the library.

Each subcommand lives in its own module ``aprkit.cli.<name>`` exposing ``add_parser(subparsers)``
(registers its argparse sub-parser and sets ``func``) so adding one never touches this file's logic.
Every error a subcommand raises is reported as one line ``aprkit <cmd>: error: ...`` (exit code 2 for bad
input, 1 for an unexpected failure), every warning as ``aprkit <cmd>: warning: ...``; ``--debug`` (before or after
the subcommand) adds the traceback and the warnings' source lines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import NoReturn

from .._lazy import import_plugins

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

#: subcommand name -> module implementing it (modules are imported only when the parser is built)
SUBCOMMANDS = {
    "demo": "aprkit.cli.demo",
    "train": "aprkit.cli.train",
    "eval": "aprkit.cli.eval",
    "corrupt": "aprkit.cli.corrupt",
}


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose "arguments are required" error says when an option taking several values
    (``--corruptions fog in out``) took the positional arguments that follow it, and how to give them."""

    _words: list[str] = []

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        self._words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def _taken(self, option: str) -> list[str]:
        """The words ``option`` (or an abbreviation argparse accepts) took when it took two or more (up to the next
        option), else none."""
        for i, word in enumerate(self._words):
            if word.startswith("--") and len(word) > 2 and option.startswith(word):
                after = self._words[i + 1:]
                taken = after[:next((k for k, w in enumerate(after) if w.startswith("-")), len(after))]
                if len(taken) > 1:
                    return taken
        return []

    def error(self, message: str) -> NoReturn:
        if message.startswith("the following arguments are required"):
            greedy = {s: taken for a in self._actions if a.option_strings and a.nargs in ("+", "*")
                      for s in a.option_strings if (taken := self._taken(s))}
            if greedy:
                took = "; ".join(f"{s} took {' '.join(taken)}" for s, taken in greedy.items())
                message += (f" ({took}: an option taking several values takes every word after it up to the next "
                            "option; if some were meant as the positional arguments, give those first or end its "
                            "list with --)")
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="aprkit",
        description="Fourier amplitude-phase recombination (APR): augment, train, corrupt and evaluate "
        "image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"aprkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = import_plugins(SUBCOMMANDS.values(), "subcommand")
    for name, module in SUBCOMMANDS.items():
        if module not in modules:
            continue  # needs an optional package that is not installed
        modules[module].add_parser(sub)
        sub.choices[name].add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                       help="print the full traceback of an error")
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``kill``, a stopped container) raised as an interrupt, so that it stops a command as
    Ctrl-C does: finished results kept, the run's files saying so."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    installed, previous = False, None
    if threading.current_thread() is threading.main_thread():
        previous, installed = signal.signal(signal.SIGTERM, _on_sigterm), True
    try:
        return _main(argv)
    except _Terminated:
        print("\nterminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:  # Ctrl-C while the command is starting (imports, argument parsing): nothing to keep
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if installed:  # a handler installed outside Python reads as None: the default then
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)  # the top level's options take no value
    if command is not None and command not in SUBCOMMANDS:  # argparse's own message has no did-you-mean
        from .._text import nearest_names

        parser.error(f"argument COMMAND: invalid choice: {command!r} (choose from {', '.join(SUBCOMMANDS)})"
                     f"{nearest_names(command, list(SUBCOMMANDS))}")
    args, extra = parser.parse_known_args(argv)
    if extra:  # the subcommand's usage and a did-you-mean (argparse names the top-level parser's)
        _unknown_arguments(parser, args, extra, words)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    original = warnings.formatwarning
    if not args.debug:  # a warning is one line for the user, not the library's source line that raised it
        warnings.formatwarning = lambda message, category, *a, **k: (
            f"aprkit {args.command}: warning: {message}\n")
    from ..distributed import launch_rank, launch_world  # (torch is loaded by every command by now)

    try:
        with warnings.catch_warnings():
            if launch_rank() > 0:  # under torchrun the warnings once, rank 0's (every rank
                warnings.simplefilter("ignore")  # printed each one: the same words once per process)
            return int(args.func(args) or 0)
    except KeyboardInterrupt as stop:
        how = "a rerun with --resume goes on" if args.command == "train" else "a rerun resumes"
        below = "\n" if sys.stderr.isatty() else ""  # below a progress bar's line on a terminal
        what = "terminated (SIGTERM)" if isinstance(stop, _Terminated) else "interrupted"
        peers = ("; under torchrun another process's failure stops this one too: see its output"
                 if isinstance(stop, _Terminated) and launch_world() > 1 else "")
        print(f"{below}{what}; finished results are kept and {how}{peers}", file=sys.stderr)
        return 143 if isinstance(stop, _Terminated) else 130
    except BrokenPipeError as err:
        if not _stdout_closed():  # another pipe (a worker's, a process group's): an error like any other
            return _error(args, err)
        with contextlib.suppress(OSError, ValueError):  # the output's reader went away (| head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except Exception as err:
        return _error(args, err)
    finally:
        warnings.formatwarning = original


#: flags of one subcommand that another's users try, with what to do instead
_ABSENT_FLAGS = {("demo", "--resume"): "the demo resumes by itself: rerun the same command with the same --out",
                 ("demo", "--overwrite"): "the demo replaces its own earlier results in --out by itself (a run of "
                                          "other settings included)"}


def _unknown_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str],
                       argv: list[str]) -> None:
    """Exit (2) on arguments no parser took, with the usage of the subcommand they were given to (the top-level
    parser's for those before the subcommand) and the nearest option of each unknown ``--flag``."""
    from .._text import nearest

    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    target = sub.choices.get(args.command, parser) if sub is not None and args.command else parser
    before = argv[:argv.index(args.command)] if args.command in argv else argv
    if target is not parser and all(word in before for word in extra):  # `aprkit --bogus eval`: not eval's option
        target = parser
    options = {o.lstrip("-"): o for a in target._actions for o in a.option_strings if o.startswith("--")}
    hints = []
    for word in extra:
        flag = word.split("=", 1)[0]
        if (args.command, flag) in _ABSENT_FLAGS:
            hints.append(f"{flag}: {_ABSENT_FLAGS[args.command, flag]}")
            continue
        if flag in options.values() and "--" in argv:  # a real option, after '--': read as a positional argument
            hints.append(f"{flag} comes after '--', after which every word is a file name; put the options before "
                         "'--' (e.g. end a list of --corruptions with '--' just before the file names)")
            continue
        near = nearest(flag.lstrip("-"), list(options)) if flag.startswith("--") and flag != "--" else []
        if near:  # "; --limt: did you mean --limit?"
            hints.append(f"{flag}: did you mean {' or '.join(options[n] for n in near)}?")
    target.error(f"unrecognized arguments: {' '.join(extra)}" + "".join(f"; {h}" for h in hints))


def _error(args: argparse.Namespace, err: BaseException) -> int:
    """One line on stderr (the traceback too with ``--debug``) and the exit code of ``err``."""
    from ._common import error_line

    if args.debug:
        traceback.print_exception(type(err), err, err.__traceback__)
    line, code = error_line(err)
    print(f"aprkit {args.command}: error: {line}", file=sys.stderr)
    return code


def _stdout_closed() -> bool:
    """Whether writing to stdout fails with a broken pipe (its reader went away). A failed write drops what it
    buffered, so a second flush succeeds: the pipe is asked (an error condition on a pipe's write end means its
    reader closed it), and where that cannot be asked (no ``poll``, no descriptor) a flush tells."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        if any(events & select.POLLERR for _, events in poller.poll(0)):
            return True
    except (AttributeError, OSError, ValueError):  # Windows, or a stdout without a descriptor
        pass
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
