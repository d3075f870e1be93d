"""Errors a user can cause. The CLI turns a `UserError` into one red line and exit code 2."""


class UserError(Exception):
    """Bad input from a user: unknown name, bad config value, missing dataset, wrong file.

    The message is complete and actionable on its own (it may span several `field: message` lines
    for config errors); the CLI prints it and exits with code 2, having written nothing.
    """
