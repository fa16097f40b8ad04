"""User-facing errors: one line that names the file and says what was expected."""


class UserError(Exception):
    """Bad input from the user (file, checkpoint, option).

    The CLI prints ``error: <message>`` on one line and exits with status 2; the live engine
    reports it (console, OSC ``/error``) and keeps its previous state.
    """
