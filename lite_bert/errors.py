"""The one exception type for problems a user can fix (bad input, bad config).

`launch.py` prints a `UserError` as a single line naming the problem and exits
with status 2; any other exception is a bug and keeps its traceback. Every
module raises `UserError` for input it refuses, with the file (and line) or the
config field in the message.
"""


class UserError(Exception):
  """A problem with the input or the configuration, explained in its message."""


def clip(text: str, limit: int = 200) -> str:
  """`text` on one line, cut to `limit` characters: what an error message may quote."""
  text = " ".join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."
