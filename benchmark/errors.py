"""One exception type for every problem a user can fix.

The CLI prints its message as a single line and exits with status 2, so a
message must name the file / column / value at fault and what was expected.
"""


class BenchmarkError(Exception):
    """A user-facing error: bad input, missing data or weights, unknown names."""


def plain(value):
    """A value as a message should show it: `2`, not `np.int64(2)` (numpy 2 scalars repr with their type)."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", None) == 0 else value
