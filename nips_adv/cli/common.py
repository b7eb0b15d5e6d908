"""What the three competition tools share: options, logging set-up, model loading, error mapping."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ..contract.constants import DEFAULT_BATCH_SIZE
from ..contract.epsilon import validate_epsilon
from ..models.catalogue import DEFAULT_MODEL, ModelListError

if TYPE_CHECKING:
    from ..models.classifier import Member

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
"""Context settings of every command: -h as well as --help."""

EXIT_SOME_FAILED = 1
"""Done, but some inputs could not be used (named on stderr)."""
EXIT_CANNOT_RUN = 2
"""Usage or set-up error: nothing was done."""

FOLDER = click.Path(exists=True, file_okay=False, path_type=Path)
"""An existing folder argument."""
INPUT_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
"""An existing file argument."""
OUTPUT_FOLDER = click.Path(file_okay=False, path_type=Path)
"""A folder the command creates if needed."""

Command = TypeVar("Command", bound=Callable[..., Any])


class EpsilonType(click.ParamType):
    """MAX_EPSILON in pixel units: a number in 0..255 (integers in the competition, fractions accepted)."""

    name = "EPS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return validate_epsilon(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


class TimeBudgetType(click.ParamType):
    """``auto``, ``off``, or a number of seconds (positive)."""

    name = "SECONDS|auto|off"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self.name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | str | None:
        if value is None or isinstance(value, float):
            return value
        text = str(value).strip().lower()
        if text in ("auto", "off"):
            return None if text == "off" else "auto"
        try:
            seconds = float(text)
        except ValueError:
            self.fail(f"{value!r} is not a number of seconds, 'auto' or 'off'", param, ctx)
        if not seconds > 0 or seconds == float("inf"):
            self.fail(f"{value!r}: the budget must be a positive number of seconds", param, ctx)
        return seconds


def resolve_epsilon(positional: float | None, option: float | None) -> float:
    """The organisers' positional MAX_EPSILON or ``--eps``: exactly one of them (or both equal)."""
    if positional is None and option is None:
        raise click.UsageError("give MAX_EPSILON, as the third argument or as --eps")
    if positional is None:
        assert option is not None  # one of them: checked above
        return option
    if option is not None and positional != option:
        raise click.UsageError(f"MAX_EPSILON {positional:g} and --eps {option:g} disagree")
    return positional


quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar (errors and warnings still print).")
"""``--quiet``/``-q``, the same in every command."""


@dataclass(frozen=True)
class ModelOptions:
    """What the model options of a tool said: which networks and weights, batch size, precision, seed, output."""

    model: str
    checkpoint: str | None
    batch_size: int
    precision: str
    seed: int
    quiet: bool
    verbose: bool

    @property
    def session_precision(self) -> str:
        """The precision the model opens in: ``auto`` starts in float32 (the attacks' plan may switch)."""
        return "float32" if self.precision == "auto" else self.precision

    @property
    def compare_precisions(self) -> bool:
        """Whether the attacks' plan should time bfloat16 against float32: ``auto`` on a CPU with bfloat16 units."""
        from ..models.classifier import cpu_has_bfloat16

        return self.precision == "auto" and cpu_has_bfloat16()

    def members(self, program: str) -> list["Member"]:
        """``--model`` with ``--checkpoint``, parsed; a bad list ends ``program`` with one line, exit 2."""
        return parse_model_option(program, self.model, self.checkpoint)


def model_options(command: Callable | None = None, *, default_model: str = DEFAULT_MODEL) -> Callable:
    """Options every tool takes (which model, which checkpoint, batch size, precision, seed, verbosity),
    given to the command as one ``options: ModelOptions`` argument.

    ``@model_options`` or ``@model_options(default_model="a,b")`` for a tool whose default is another model.
    """
    if command is None:
        return functools.partial(model_options, default_model=default_model)

    @functools.wraps(command)
    def with_options(*args: Any, model_name: str, checkpoint: str | None, batch_size: int, precision: str, seed: int,
                     quiet: bool, verbose: bool, **kwargs: Any) -> Any:
        options = ModelOptions(model_name, checkpoint, batch_size, precision, seed, quiet, verbose)
        return command(*args, options=options, **kwargs)

    decorators = [
        click.option(
            "--model",
            "model_name",
            default=default_model,
            show_default=True,
            envvar="NIPS_ADV_MODEL",
            metavar="NAME[:WEIGHT],...",
            help="Model, or an ensemble whose logits are averaged with the given weights (default 1), e.g. "
            "efficientnet_lite0,efficientnet_lite1:0.5 (`nips-adv models` lists them). Env: NIPS_ADV_MODEL.",
        ),
        click.option(
            "--checkpoint",
            default=None,
            metavar="PREFIX,...",
            help="TF checkpoint prefix (e.g. ./inception_v3.ckpt) or a folder holding one, one per model in "
            "--model's order (an empty entry: that model's default). Default: the model's file in "
            "$NIPS_ADV_CHECKPOINTS, else ~/.cache/nips_adv/checkpoints.",
        ),
        click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True, help="Images per batch."),
        click.option(
            "--precision",
            type=click.Choice(["auto", "float32", "bfloat16"]),
            default="auto",
            show_default=True,
            help="bfloat16: oneDNN runs convolutions in bfloat16 where the CPU has bf16/AMX units (Inception V3 "
            "about 1.9x faster there; the EfficientNet-Lite models slower). auto: the attacks' default plan times "
            "both on its first pass on such a CPU and keeps the faster; otherwise float32.",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw (transforms, copies, passes)."),
        click.option(
            "--max-pixels",
            type=click.IntRange(min=1),
            default=None,
            expose_value=False,
            callback=_set_max_pixels,
            help="Largest input image (width x height) decoded; larger ones are named and skipped, exit 1 "
            "[default: 4096x4096 = 16777216; env NIPS_ADV_MAX_PIXELS].",
        ),
        quiet_option,
        click.option("--verbose", "-v", is_flag=True, help="Per-image details and TensorFlow's own log."),
    ]
    return functools.reduce(lambda wrapped, decorator: decorator(wrapped), reversed(decorators), with_options)


def rules_option(default: str | None) -> Callable[[Command], Command]:
    """``--rules final|dev``: whose scoring (the final round's or the development tool's)."""
    return click.option(
        "--rules",
        type=click.Choice(["final", "dev"]),
        default=default,
        show_default=default is not None,
        help="final: the final round's scoring (only complete attacks score defenses and vice versa, only IMAGEID.png "
        "counts) and its result files as well; dev: the development tool's."
        + ("" if default is not None else "  [default: the evaluation's]"),
    )


def _set_max_pixels(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    from ..contract.images import set_max_pixels

    set_max_pixels(value)


def parse_model_option(program: str, model_name: str, checkpoint: str | None) -> list["Member"]:
    """The members of ``--model`` / ``--checkpoint`` (``nips_adv.models.classifier.Member``); a bad list
    ends the run with one line and exit status 2, before anything is written."""
    from ..models.classifier import parse_members

    try:
        return parse_members(model_name, checkpoint)
    except ModelListError as error:
        fail(program, str(error))


def configure_logging(program: str, *, verbose: bool) -> None:
    """Messages on stderr as ``program: level: text``; TensorFlow quiet unless ``verbose``."""
    # Read by TensorFlow's C++ logging when it is first imported, which happens after this.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "3"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ProgramFormatter(program))
    root = logging.getLogger("nips_adv")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


class _ProgramFormatter(logging.Formatter):
    def __init__(self, program: str) -> None:
        super().__init__()
        self.program = program

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.program}: {record.levelname.lower()}: {record.getMessage()}"


def fail(program: str, message: str, exit_code: int = EXIT_CANNOT_RUN) -> NoReturn:
    """One line on stderr and the exit code (2: the run could not start)."""
    click.echo(f"{program}: error: {message}", err=True)
    sys.exit(exit_code)


def is_out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError or TensorFlow's ResourceExhaustedError (OOM), without importing TensorFlow."""
    return isinstance(error, MemoryError) or any(kind.__name__ == "ResourceExhaustedError" for kind in type(error).__mro__)


@contextmanager
def out_of_memory_ends(program: str, written: Callable[[], int], lower: str) -> Iterator[None]:
    """Out of memory anywhere inside: one line naming what to lower, exit 1 when ``written()`` outputs
    are kept (they stay where they are), else 2. Other errors pass through."""
    try:
        yield
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        count = written()
        first_line = (str(getattr(error, "message", "")) or type(error).__name__).strip().splitlines()[0][:200]
        fail(program, f"out of memory ({first_line}); {count} outputs written and kept; lower {lower}",
             EXIT_SOME_FAILED if count else EXIT_CANNOT_RUN)


@contextmanager
def failing_on(program: str, *errors: type[Exception], path: object = "") -> Iterator[None]:
    """Turn ``errors`` (their message is the line) and any OSError (naming its file, else ``path``) into ``fail``."""
    try:
        yield
    except errors as error:
        fail(program, str(error))
    except OSError as error:
        fail(program, f"{error.filename or path}: {error.strerror or error}")
