"""Moved to :mod:`course_helpers.limits` (the ground floor, under the supervisor and the
server); this name stays so that older imports keep working."""

from ..limits import *  # noqa: F401,F403
from ..limits import PARENT, V1, V2, memory_limit_of, memory_prefix, remove, remove_empty, supported  # noqa: F401
