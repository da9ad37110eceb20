"""HRESULTs (spec §2.14) and the one error tree, rooted at ``MapiError``.

HRESULTs are unsigned 32-bit values. Failures (severity bit 31 set) are raised as
``MapiError``; success warnings (``MAPI_W_*``) are returned or recorded, never raised.

Every error mapispool raises to its users is a ``MapiError`` (``except MapiError`` catches
them all; ``.hresult`` says which). Subclasses add a family and keep the HRESULT:
``NotFoundError`` (``MAPI_E_NOT_FOUND``, also a ``KeyError``), ``ProfileError``
(``MAPI_E_UNCONFIGURED``), ``SmtpError`` (a server's reply), ``CorruptContent``
(``MAPI_E_CORRUPT_DATA``) and ``ProviderNotFound`` (a ``NotFoundError``). Foreign errors
are translated where they arise; only Python's own ``TimeoutError`` (a wait that passed
its deadline) and programming errors (a wrong type passed in) are not ``MapiError``s.
"""

from __future__ import annotations

from enum import IntEnum

SEVERITY_ERROR = 0x80000000
FACILITY_ITF = 0x00040000


def make_mapi_e(code: int) -> int:
    """``MAKE_MAPI_E``: an interface-specific failure HRESULT."""
    return SEVERITY_ERROR | FACILITY_ITF | code


def make_mapi_s(code: int) -> int:
    """``MAKE_MAPI_S``: an interface-specific success (warning) HRESULT."""
    return FACILITY_ITF | code


class HResult(IntEnum):
    """Every HRESULT the project uses, with the exact header values."""

    S_OK = 0x00000000
    S_FALSE = 0x00000001

    MAPI_E_CALL_FAILED = 0x80004005
    MAPI_E_INTERFACE_NOT_SUPPORTED = 0x80004002
    MAPI_E_NO_ACCESS = 0x80070005
    MAPI_E_NOT_ENOUGH_MEMORY = 0x8007000E
    MAPI_E_INVALID_PARAMETER = 0x80070057

    MAPI_E_NO_SUPPORT = 0x80040102
    MAPI_E_BAD_CHARWIDTH = 0x80040103
    MAPI_E_STRING_TOO_LONG = 0x80040105
    MAPI_E_UNKNOWN_FLAGS = 0x80040106
    MAPI_E_INVALID_ENTRYID = 0x80040107
    MAPI_E_INVALID_OBJECT = 0x80040108
    MAPI_E_OBJECT_CHANGED = 0x80040109
    MAPI_E_OBJECT_DELETED = 0x8004010A
    MAPI_E_BUSY = 0x8004010B
    MAPI_E_NOT_ENOUGH_DISK = 0x8004010D
    MAPI_E_NOT_ENOUGH_RESOURCES = 0x8004010E
    MAPI_E_NOT_FOUND = 0x8004010F
    MAPI_E_VERSION = 0x80040110
    MAPI_E_LOGON_FAILED = 0x80040111
    MAPI_E_SESSION_LIMIT = 0x80040112
    MAPI_E_USER_CANCEL = 0x80040113
    MAPI_E_UNABLE_TO_ABORT = 0x80040114
    MAPI_E_NETWORK_ERROR = 0x80040115
    MAPI_E_DISK_ERROR = 0x80040116
    MAPI_E_TOO_COMPLEX = 0x80040117
    MAPI_E_BAD_COLUMN = 0x80040118
    MAPI_E_EXTENDED_ERROR = 0x80040119
    MAPI_E_COMPUTED = 0x8004011A
    MAPI_E_CORRUPT_DATA = 0x8004011B
    MAPI_E_UNCONFIGURED = 0x8004011C
    MAPI_E_FAILONEPROVIDER = 0x8004011D
    MAPI_E_UNKNOWN_CPID = 0x8004011E
    MAPI_E_UNKNOWN_LCID = 0x8004011F
    MAPI_E_PASSWORD_CHANGE_REQUIRED = 0x80040120
    MAPI_E_PASSWORD_EXPIRED = 0x80040121
    MAPI_E_INVALID_WORKSTATION_ACCOUNT = 0x80040122
    MAPI_E_INVALID_ACCESS_TIME = 0x80040123
    MAPI_E_ACCOUNT_DISABLED = 0x80040124
    MAPI_E_END_OF_SESSION = 0x80040200
    MAPI_E_UNKNOWN_ENTRYID = 0x80040201
    MAPI_E_MISSING_REQUIRED_COLUMN = 0x80040202
    MAPI_E_BAD_VALUE = 0x80040301
    MAPI_E_INVALID_TYPE = 0x80040302
    MAPI_E_TYPE_NO_SUPPORT = 0x80040303
    MAPI_E_UNEXPECTED_TYPE = 0x80040304
    MAPI_E_TOO_BIG = 0x80040305
    MAPI_E_DECLINE_COPY = 0x80040306
    MAPI_E_UNEXPECTED_ID = 0x80040307
    MAPI_E_UNABLE_TO_COMPLETE = 0x80040400
    MAPI_E_TIMEOUT = 0x80040401
    MAPI_E_TABLE_EMPTY = 0x80040402
    MAPI_E_TABLE_TOO_BIG = 0x80040403
    MAPI_E_INVALID_BOOKMARK = 0x80040405
    MAPI_E_WAIT = 0x80040500
    MAPI_E_CANCEL = 0x80040501
    MAPI_E_NOT_ME = 0x80040502
    MAPI_E_CORRUPT_STORE = 0x80040600
    MAPI_E_NOT_IN_QUEUE = 0x80040601
    MAPI_E_NO_SUPPRESS = 0x80040602
    MAPI_E_COLLISION = 0x80040604
    MAPI_E_NOT_INITIALIZED = 0x80040605
    MAPI_E_NON_STANDARD = 0x80040606
    MAPI_E_NO_RECIPIENTS = 0x80040607
    MAPI_E_SUBMITTED = 0x80040608
    MAPI_E_HAS_FOLDERS = 0x80040609
    MAPI_E_HAS_MESSAGES = 0x8004060A
    MAPI_E_FOLDER_CYCLE = 0x8004060B
    MAPI_E_AMBIGUOUS_RECIP = 0x80040700

    MAPI_W_NO_SERVICE = 0x00040203
    MAPI_W_ERRORS_RETURNED = 0x00040380
    MAPI_W_POSITION_CHANGED = 0x00040481
    MAPI_W_APPROX_COUNT = 0x00040482
    MAPI_W_CANCEL_MESSAGE = 0x00040580
    MAPI_W_PARTIAL_COMPLETION = 0x00040680


def failed(hresult: int) -> bool:
    """``FAILED(hr)``: true for error HRESULTs (severity bit set), false for warnings."""
    return bool(hresult & SEVERITY_ERROR)


def succeeded(hresult: int) -> bool:
    """``SUCCEEDED(hr)``."""
    return not failed(hresult)


def hresult_name(hresult: int) -> str:
    """The header name of ``hresult``, or its hex value when it has none here."""
    try:
        return HResult(hresult).name
    except ValueError:
        return f"0x{hresult:08X}"


class MapiError(Exception):
    """A failed MAPI call: the one exception type of mapispool.

    ``hresult`` is the failure code (an ``HResult`` member when known); ``retry_after``
    is the number of seconds a transport asks the spooler to wait before trying again
    (``MAPI_E_WAIT`` / ``MAPI_E_NETWORK_ERROR``, the SPI's ``*lpulReturnParm``);
    ``reply`` carries a server's reply (for example ``"451 4.7.1 try later"``) when the
    failure came from a mail server. Foreign errors are translated at the boundary where
    they arise and chained with ``raise MapiError(...) from exc``.
    """

    def __init__(
        self,
        hresult: int,
        message: str = "",
        *,
        retry_after: float | None = None,
        reply: str | None = None,
    ) -> None:
        if not failed(hresult):
            raise ValueError(f"MapiError needs a failure HRESULT, not {hresult_name(hresult)}")
        try:
            self.hresult: int = HResult(hresult)
        except ValueError:
            self.hresult = hresult
        self.message = message
        self.retry_after = retry_after
        self.reply = reply
        super().__init__(hresult, message)

    @property
    def name(self) -> str:
        """The HRESULT's header name, e.g. ``"MAPI_E_BUSY"``."""
        return hresult_name(self.hresult)

    def __str__(self) -> str:
        text = f"{self.name}: {self.message}" if self.message else self.name
        if self.reply and self.reply not in text:
            text += f" (server said: {self.reply})"
        return text

    def __repr__(self) -> str:
        extra = f", retry_after={self.retry_after!r}" if self.retry_after is not None else ""
        return f"MapiError({self.name}, {self.message!r}{extra})"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_error, (self.hresult, self.message, self.retry_after, self.reply))


def _rebuild_error(
    hresult: int, message: str, retry_after: float | None, reply: str | None
) -> MapiError:
    return MapiError(hresult, message, retry_after=retry_after, reply=reply)


class NotFoundError(MapiError, KeyError):
    """``MAPI_E_NOT_FOUND``: a name looked up is not there (a transport, a provider).
    Also a ``KeyError`` (and so a ``LookupError``), as a lookup by name has always been."""

    def __init__(self, message: str) -> None:
        super().__init__(HResult.MAPI_E_NOT_FOUND, message)

    def __str__(self) -> str:
        return MapiError.__str__(self)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message,))
