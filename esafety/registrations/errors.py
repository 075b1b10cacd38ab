"""What registration actions refuse with. Messages are written for the person who will read them."""

from __future__ import annotations


class RegistrationError(Exception):
    status = 400


class Invalid(RegistrationError, ValueError):
    """The input is wrong (a bad MAC, a missing note): fix it and try again."""

    status = 400


class Conflict(RegistrationError):
    """The store says no: a duplicate MAC, an already-decided request, a newer AUP, a ban."""

    status = 409


class Forbidden(RegistrationError, PermissionError):
    status = 403


class NotFound(RegistrationError, LookupError):
    status = 404
