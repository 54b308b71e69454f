"""Errors the helpers raise: one readable sentence that says what to do next."""

from __future__ import annotations


class CourseError(RuntimeError):
    """Base class: the CLI prints the message alone, without a traceback."""


class PortInUseError(CourseError):
    pass


class BinaryNotFoundError(CourseError):
    pass


class ReadinessTimeoutError(CourseError):
    pass


class DockerUnavailableError(CourseError):
    pass
