"""critic-data: verifiable preference-RL datasets for multimodal critics."""

from dataclasses import MISSING, field, fields
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("critic-data")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, unreachable server).

    The CLI prints its message as one line and exits non-zero; no traceback.
    """


def package_version(package: str) -> str:
    """An installed distribution's version, or "not installed"."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def option(default=MISSING, help: str = "", factory=None, **cli):  # noqa: A002 - the CLI's word for it
    """A field of an options dataclass (BuildOptions, EvalOptions, BestOfNOptions): its default
    (none: a required field) and its help; `cli` says how the command line takes it: `flag`,
    `type` and `cli_default` where it writes the value otherwise, `show_default`, `required`,
    `metavar` for the help's value (its choices: `max-gap|all`), `argument=True` for a positional
    argument instead of an option, `manifest=False` for an option
    that does not shape the result. critic_data/cli.py makes each command's options from these
    fields: one declaration per option."""
    metadata = {"help": help, "cli": cli}
    return field(default_factory=factory, metadata=metadata) if factory else field(default=default, metadata=metadata)


def cli_flags(options_class) -> dict[str, str]:
    """The command-line flag of each field of an options dataclass, as the user types it: its
    `flag`, else the field's name with dashes (`pairs_per_prompt` -> `--pairs-per-prompt`, the
    rule by which typer names the options critic_data/cli.py makes from these fields)."""
    return {spec.name: spec.metadata["cli"].get("flag", "--" + spec.name.replace("_", "-"))
            for spec in fields(options_class)}
