"""User-facing errors. The CLI prints these as one clear message (no traceback) and exits non-zero."""


class StealbenchError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""


class UnknownKeyError(StealbenchError, KeyError):
    """A registry key that nothing registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateKeyError(StealbenchError):
    """Two plugins registered the same key."""


class ConfigError(StealbenchError):
    """A configuration value that is out of range or inconsistent with another."""


def check_options(checks) -> None:
    """`checks`: (condition, message) pairs; raises ConfigError with the first failing one's message."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


class DataNotFoundError(StealbenchError):
    """A data set that is not where the configuration says it is."""


class OracleInputError(StealbenchError):
    """An attack sent the oracle something that is not a batch of images in pixel space."""


class BudgetExceededError(StealbenchError):
    """An attack asked for more queries than its budget has left."""


class ProtocolError(StealbenchError):
    """A message from the attacker's process broke the schema (the attack's fault, never the defense's)."""


class DefenseOutputError(StealbenchError):
    """A defense released something that is not a probability vector of the right shape."""


class PluginError(StealbenchError):
    """A plugin failed to load or implements the hooks wrongly."""


class EndpointError(StealbenchError):
    """A remote prediction endpoint (`fit --oracle.url`) cannot be reached, keeps failing, or answers something
    that is not a V2 response: a fault on the defender's side of the link, so the run ends (never complete)."""
