class LoadgenError(ValueError):
    """A mistake the user can fix; the message names the fix. The CLI prints it on one line and exits 2."""
