"""The one exception nextmini raises: its message is nextmini's own one-line error."""


class NextminiError(Exception):
    """Something nextmini refused or could not do; the message says what to do."""
