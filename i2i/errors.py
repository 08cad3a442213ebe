"""The base of every error whose message alone tells a user what went wrong and what to do."""


class I2IError(Exception):
    """Shown to the user without a traceback by the CLI and the DVC stages."""
