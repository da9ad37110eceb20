"""Property tags (spec §2.15): full 32-bit tags, ``(property id << 16) | property type``.

String properties use their Unicode form (``PT_UNICODE``); ``ansi_tag`` gives the
``PT_STRING8`` twin. Values in ``props`` mappings are Python objects: ``int`` for
``PT_LONG``, ``bool`` for ``PT_BOOLEAN``, ``str`` for strings, ``bytes`` for
``PT_BINARY`` and timezone-aware ``datetime`` for ``PT_SYSTIME``.
"""

from __future__ import annotations

from enum import IntEnum


class PropType(IntEnum):
    """The property types the project stores."""

    PT_LONG = 0x0003
    PT_ERROR = 0x000A
    PT_BOOLEAN = 0x000B
    PT_STRING8 = 0x001E
    PT_UNICODE = 0x001F
    PT_SYSTIME = 0x0040
    PT_BINARY = 0x0102


def prop_tag(prop_type: int, prop_id: int) -> int:
    """``PROP_TAG(type, id)``."""
    return (prop_id << 16) | prop_type


def prop_id(tag: int) -> int:
    """``PROP_ID(tag)``."""
    return (tag >> 16) & 0xFFFF


def prop_type(tag: int) -> int:
    """``PROP_TYPE(tag)``."""
    return tag & 0xFFFF


def ansi_tag(tag: int) -> int:
    """The ``PT_STRING8`` form of a ``PT_UNICODE`` tag (other tags are returned unchanged)."""
    return prop_tag(PropType.PT_STRING8, prop_id(tag)) if prop_type(tag) == 0x001F else tag


class PropTag(IntEnum):
    """Every property tag the spooler reads or writes."""

    # Status-table and status-object columns (§2.15, first table).
    PR_ENTRYID = 0x0FFF0102
    PR_INSTANCE_KEY = 0x0FF60102
    PR_OBJECT_TYPE = 0x0FFE0003
    PR_ROWID = 0x30000003
    PR_DISPLAY_NAME = 0x3001001F
    PR_PROVIDER_DISPLAY = 0x3006001F
    PR_RESOURCE_FLAGS = 0x30090003
    PR_PROVIDER_DLL_NAME = 0x300A001F
    PR_PROVIDER_UID = 0x300C0102
    PR_PROVIDER_ORDINAL = 0x300D0003
    PR_IDENTITY_DISPLAY = 0x3E00001F
    PR_IDENTITY_ENTRYID = 0x3E010102
    PR_RESOURCE_METHODS = 0x3E020003
    PR_RESOURCE_TYPE = 0x3E030003
    PR_STATUS_CODE = 0x3E040003
    PR_IDENTITY_SEARCH_KEY = 0x3E050102
    PR_OWN_STORE_ENTRYID = 0x3E060102
    PR_RESOURCE_PATH = 0x3E07001F
    PR_STATUS_STRING = 0x3E08001F
    PR_X400_DEFERRED_DELIVERY_CANCEL = 0x3E09000B
    PR_HEADER_FOLDER_ENTRYID = 0x3E0A0102
    PR_REMOTE_PROGRESS = 0x3E0B0003
    PR_REMOTE_PROGRESS_TEXT = 0x3E0C001F
    PR_REMOTE_VALIDATE_OK = 0x3E0D000B

    # Message, recipient and queue properties (§2.15, second table).
    PR_DEFERRED_DELIVERY_TIME = 0x000F0040
    PR_DELIVER_TIME = 0x00100040
    PR_MESSAGE_CLASS = 0x001A001F
    PR_ORIGINATOR_DELIVERY_REPORT_REQUESTED = 0x0023000B
    PR_REPORT_TIME = 0x00320040
    PR_CLIENT_SUBMIT_TIME = 0x00390040
    PR_REPORT_ENTRYID = 0x00450102
    PR_PROVIDER_SUBMIT_TIME = 0x00480040
    PR_NDR_REASON_CODE = 0x0C040003
    PR_NDR_DIAG_CODE = 0x0C050003
    PR_ORIGINATOR_NON_DELIVERY_REPORT_REQUESTED = 0x0C08000B
    PR_RECIPIENT_TYPE = 0x0C150003
    PR_DELETE_AFTER_SUBMIT = 0x0E01000B
    PR_MESSAGE_FLAGS = 0x0E070003
    PR_SENTMAIL_ENTRYID = 0x0E0A0102
    PR_RESPONSIBILITY = 0x0E0F000B
    PR_SPOOLER_STATUS = 0x0E100003
    PR_TRANSPORT_STATUS = 0x0E110003
    PR_SUBMIT_FLAGS = 0x0E140003
    PR_RECIPIENT_STATUS = 0x0E150003
    PR_TRANSPORT_KEY = 0x0E160003
    PR_PREPROCESS = 0x0E22000B
    PR_ADDRTYPE = 0x3002001F
    PR_TRANSPORT_PROVIDERS = 0x3D020102
    PR_DEFERRED_SEND_NUMBER = 0x3FEB0003
    PR_DEFERRED_SEND_UNITS = 0x3FEC0003
    PR_DEFERRED_SEND_TIME = 0x3FEF0040

    # Standard MAPI tags beyond the spec's tables that the store fills in.
    PR_PRIORITY = 0x00260003
    PR_SUBJECT = 0x0037001F
    PR_SENDER_NAME = 0x0C1A001F
    PR_SENDER_EMAIL_ADDRESS = 0x0C1F001F
    PR_DISPLAY_BCC = 0x0E02001F
    PR_DISPLAY_CC = 0x0E03001F
    PR_DISPLAY_TO = 0x0E04001F
    PR_MESSAGE_DELIVERY_TIME = 0x0E060040
    PR_MESSAGE_SIZE = 0x0E080003
    PR_PARENT_ENTRYID = 0x0E090102
    PR_REPORT_TEXT = 0x1001001F
    PR_INTERNET_MESSAGE_ID = 0x1035001F
    PR_EMAIL_ADDRESS = 0x3003001F
