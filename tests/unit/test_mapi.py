"""The MAPI vocabulary checks itself: exact values, patterns, aliases and exports."""

from __future__ import annotations

import mapispool.mapi as mapi
from mapispool.mapi import (
    FAMILIES,
    HResult,
    MapiError,
    PropTag,
    TransportNotifyFlags,
    failed,
    prop_type,
)


def test_no_family_has_two_members_with_one_value():
    """A duplicate value inside a family would make one name an alias of another."""
    for family in (*FAMILIES, HResult, PropTag):
        values = [m.value for m in family]
        assert len(values) == len(set(values)), family.__name__


def test_end_notifications_are_begin_shifted_by_16():
    """NOTIFY_END_x == NOTIFY_BEGIN_x << 16 (spec §2.9)."""
    for member in TransportNotifyFlags:
        if member.name.startswith("NOTIFY_BEGIN_"):
            end = TransportNotifyFlags[member.name.replace("BEGIN", "END")]
            assert end == member << 16


def test_severity_bit_matches_the_name():
    """MAPI_E_* are failures, MAPI_W_* and S_* are not."""
    for member in HResult:
        assert failed(member) == member.name.startswith("MAPI_E_"), member.name


def test_property_types_match_the_tags():
    """Every PR_ tag carries a known property type in its low word."""
    known = {0x0003, 0x000A, 0x000B, 0x001E, 0x001F, 0x0040, 0x0102}
    for tag in PropTag:
        assert prop_type(tag) in known, tag.name
    assert PropTag.PR_STATUS_CODE == 0x3E040003
    assert PropTag.PR_ENTRYID == 0x0FFF0102


def test_spot_values_from_the_headers():
    """A sample of exact values from spec §2."""
    assert mapi.FLUSH_UPLOAD == 0x2
    assert mapi.FLUSH_DOWNLOAD == 0x4
    assert mapi.FLUSH_ASYNC_OK == 0x20
    assert mapi.STATUS_OUTBOUND_FLUSH == 0x00400000
    assert mapi.STATUS_INBOUND_FLUSH == 0x00040000
    assert mapi.END_DONT_RESEND == 0x40000
    assert mapi.NOTIFY_SENTDEFERRED == 0x4
    assert mapi.MAPI_E_BUSY == 0x8004010B
    assert mapi.MAPI_E_NOT_ME == 0x80040502
    assert mapi.STATUSROW_UPDATE == 0x10000000
    assert mapi.MAPI_SPOOLER == 0x25


def test_every_member_is_exported_under_its_mapi_name():
    """Both spellings exist and agree: StatusCode.STATUS_X is mapispool.mapi.STATUS_X."""
    for family in (*FAMILIES, HResult, PropTag):
        for member in family:
            assert getattr(mapi, member.name) == member.value, member.name
    assert mapi.__all__ == sorted(mapi.__all__)


def test_mapi_error_carries_hresult_and_retry_after():
    """MapiError(hresult, message, retry_after=) keeps both as attributes and refuses
    success codes."""
    error = MapiError(mapi.MAPI_E_WAIT, "busy server", retry_after=30, reply="451 later")
    assert error.hresult == HResult.MAPI_E_WAIT
    assert error.retry_after == 30
    assert "MAPI_E_WAIT" in str(error)
    assert "451 later" in str(error)
    try:
        MapiError(mapi.S_OK)
    except ValueError:
        pass
    else:
        raise AssertionError("S_OK is not an error")


def test_flush_flag_table_reads_both_ways():
    """FLUSH_UPLOAD is outbound and FLUSH_DOWNLOAD inbound (spec §6.1), from one table."""
    from mapispool.spi import flush_bits_for, flush_flags_for

    both = mapi.FLUSH_UPLOAD | mapi.FLUSH_DOWNLOAD
    assert flush_bits_for(mapi.FLUSH_UPLOAD) == mapi.STATUS_OUTBOUND_FLUSH
    assert flush_bits_for(mapi.FLUSH_DOWNLOAD) == mapi.STATUS_INBOUND_FLUSH
    assert flush_flags_for(flush_bits_for(both)) == both
