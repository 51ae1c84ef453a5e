class BenchError(RuntimeError):
    """A configuration the user can fix (unsupported on this device, impossible shape); the message names the fix."""
