class BackendError(RuntimeError):
    """A user-visible backend problem (cannot start, not ready, model does not fit); the message names the fix."""
