"""MAPI flag and enumeration values (spec/mapi-reference.md §2), exactly as in the headers.

Each family is one ``IntFlag``/``IntEnum`` so values carry their meaning in reprs and logs;
``mapispool.mapi`` re-exports every member under its MAPI header name as well.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class ResourceType(IntEnum):
    """``PR_RESOURCE_TYPE`` values (§2.1): exactly one per status row."""

    MAPI_STORE_PROVIDER = 0x21
    MAPI_AB = 0x22
    MAPI_AB_PROVIDER = 0x23
    MAPI_TRANSPORT_PROVIDER = 0x24
    MAPI_SPOOLER = 0x25
    MAPI_PROFILE_PROVIDER = 0x26
    MAPI_SUBSYSTEM = 0x27
    MAPI_HOOK_PROVIDER = 0x28


class ResourceMethods(IntFlag):
    """``PR_RESOURCE_METHODS`` bits (§2.2): which status-object methods work."""

    STATUS_VALIDATE_STATE = 0x00000001
    STATUS_SETTINGS_DIALOG = 0x00000002
    STATUS_CHANGE_PASSWORD = 0x00000004
    STATUS_FLUSH_QUEUES = 0x00000008


class ResourceFlags(IntFlag):
    """``PR_RESOURCE_FLAGS`` bits (§2.3)."""

    STATUS_DEFAULT_OUTBOUND = 0x00000001
    STATUS_DEFAULT_STORE = 0x00000002
    STATUS_PRIMARY_IDENTITY = 0x00000004
    STATUS_SIMPLE_STORE = 0x00000008
    STATUS_XP_PREFER_LAST = 0x00000010
    STATUS_NO_PRIMARY_IDENTITY = 0x00000020
    STATUS_NO_DEFAULT_STORE = 0x00000040
    STATUS_TEMP_SECTION = 0x00000080
    STATUS_OWN_STORE = 0x00000100
    HOOK_INBOUND = 0x00000200
    HOOK_OUTBOUND = 0x00000400
    STATUS_NEED_IPM_TREE = 0x00000800
    STATUS_PRIMARY_STORE = 0x00001000
    STATUS_SECONDARY_STORE = 0x00002000


class StatusCode(IntFlag):
    """``PR_STATUS_CODE`` bits (§2.4). Low 16 bits: any status object; high: transports."""

    STATUS_AVAILABLE = 0x00000001
    STATUS_OFFLINE = 0x00000002
    STATUS_FAILURE = 0x00000004
    STATUS_INBOUND_ENABLED = 0x00010000
    STATUS_INBOUND_ACTIVE = 0x00020000
    STATUS_INBOUND_FLUSH = 0x00040000
    STATUS_OUTBOUND_ENABLED = 0x00100000
    STATUS_OUTBOUND_ACTIVE = 0x00200000
    STATUS_OUTBOUND_FLUSH = 0x00400000
    STATUS_REMOTE_ACCESS = 0x00800000


class ValidateFlags(IntFlag):
    """``ValidateState`` flags (§2.5), for status objects and transport logons."""

    SUPPRESS_UI = 0x00000001
    REFRESH_XP_HEADER_CACHE = 0x00010000
    PROCESS_XP_HEADER_CACHE = 0x00020000
    FORCE_XP_CONNECT = 0x00040000
    FORCE_XP_DISCONNECT = 0x00080000
    CONFIG_CHANGED = 0x00100000
    ABORT_XP_HEADER_OPERATION = 0x00200000
    SHOW_XP_SESSION_UI = 0x00400000


class FlushFlags(IntFlag):
    """``FlushQueues`` flags (§2.7). Bit 0x1 is unassigned."""

    FLUSH_UPLOAD = 0x00000002
    FLUSH_DOWNLOAD = 0x00000004
    FLUSH_FORCE = 0x00000008
    FLUSH_NO_UI = 0x00000010
    FLUSH_ASYNC_OK = 0x00000020


class LogonFlags(IntFlag):
    """Transport logon flags (§2.8): the spooler's requests and the transport's answers."""

    LOGON_NO_DIALOG = 0x00000001
    LOGON_NO_CONNECT = 0x00000004
    LOGON_NO_INBOUND = 0x00000008
    LOGON_NO_OUTBOUND = 0x00000010
    LOGON_SP_IDLE = 0x00010000
    LOGON_SP_POLL = 0x00020000
    LOGON_SP_RESOLVE = 0x00040000
    MAPI_UNICODE = 0x80000000


class LogoffFlags(IntFlag):
    """``TransportLogoff`` flags (§2.8)."""

    LOGOFF_NORMAL = 0x00000001
    LOGOFF_HURRY = 0x80000000


class TransportNotifyFlags(IntFlag):
    """``IXPLogon::TransportNotify`` flags (§2.9). END_x is BEGIN_x << 16."""

    NOTIFY_BEGIN_INBOUND = 0x00000001
    NOTIFY_BEGIN_OUTBOUND = 0x00000002
    NOTIFY_BEGIN_INBOUND_FLUSH = 0x00000004
    NOTIFY_BEGIN_OUTBOUND_FLUSH = 0x00000008
    NOTIFY_END_INBOUND = 0x00010000
    NOTIFY_END_OUTBOUND = 0x00020000
    NOTIFY_END_INBOUND_FLUSH = 0x00040000
    NOTIFY_END_OUTBOUND_FLUSH = 0x00080000
    NOTIFY_ABORT_DEFERRED = 0x40000000
    NOTIFY_CANCEL_MESSAGE = 0x80000000


class SpoolerNotifyFlags(IntFlag):
    """``IMAPISupport::SpoolerNotify`` flags (§2.10)."""

    NOTIFY_NEWMAIL = 0x00000001
    NOTIFY_READYTOSEND = 0x00000002
    NOTIFY_SENTDEFERRED = 0x00000004
    NOTIFY_CRITSEC = 0x00001000
    NOTIFY_NONCRIT = 0x00002000
    NOTIFY_CONFIG_CHANGE = 0x00004000
    NOTIFY_CRITICAL_ERROR = 0x10000000
    NOTIFY_NEWMAIL_RECEIVED = 0x20000000


class SubmitFlags(IntFlag):
    """``IXPLogon::SubmitMessage`` flags (§2.11)."""

    BEGIN_DEFERRED = 0x00000001


class EndMessageFlags(IntFlag):
    """What ``IXPLogon::EndMessage`` answers (§2.11); 0 means "sent"."""

    END_RESEND_NOW = 0x00010000
    END_RESEND_LATER = 0x00020000
    END_DONT_RESEND = 0x00040000


class RecipientType(IntEnum):
    """``PR_RECIPIENT_TYPE`` values (§2.13)."""

    MAPI_ORIG = 0
    MAPI_TO = 1
    MAPI_CC = 2
    MAPI_BCC = 3


class MessageFlags(IntFlag):
    """``PR_MESSAGE_FLAGS`` bits (§2.13)."""

    MSGFLAG_READ = 0x1
    MSGFLAG_UNMODIFIED = 0x2
    MSGFLAG_SUBMIT = 0x4
    MSGFLAG_UNSENT = 0x8
    MSGFLAG_HASATTACH = 0x10
    MSGFLAG_FROMME = 0x20
    MSGFLAG_ASSOCIATED = 0x40
    MSGFLAG_RESEND = 0x80
    MSGFLAG_RN_PENDING = 0x100
    MSGFLAG_NRN_PENDING = 0x200


class ObjectType(IntEnum):
    """``PR_OBJECT_TYPE`` values used here."""

    MAPI_STATUS = 0x0000000A


class DeferredSendUnits(IntEnum):
    """``PR_DEFERRED_SEND_UNITS`` values (§4.4)."""

    MINUTES = 0
    HOURS = 1
    DAYS = 2
    WEEKS = 3


#: ``IMAPISupport::ModifyStatusRow`` flag: merge the given columns instead of replacing the row.
STATUSROW_UPDATE = 0x10000000

#: Recipient-type bits (§2.13) that may be OR-ed onto a ``RecipientType``.
MAPI_P1 = 0x10000000
MAPI_SUBMITTED = 0x80000000

#: SPI versions (§2.8).
PDK1_SPI_VERSION = 0x00010000
PDK2_SPI_VERSION = 0x00010008
PDK3_SPI_VERSION = 0x00010010
CURRENT_SPI_VERSION = PDK3_SPI_VERSION

#: Every flag/enum family defined here, for the self-checking tests and for re-export.
FAMILIES: tuple[type[IntEnum] | type[IntFlag], ...] = (
    ResourceType,
    ResourceMethods,
    ResourceFlags,
    StatusCode,
    ValidateFlags,
    FlushFlags,
    LogonFlags,
    LogoffFlags,
    TransportNotifyFlags,
    SpoolerNotifyFlags,
    SubmitFlags,
    EndMessageFlags,
    RecipientType,
    MessageFlags,
    ObjectType,
)
