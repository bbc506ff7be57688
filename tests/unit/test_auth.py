"""auth.addr: allow and reject lists with wildcards; no option means access denied."""

from __future__ import annotations

import pytest

from glusterpy.xlators.protocol.auth import check_address


def test_no_auth_option_denies():
    reason = check_address({}, "brick1", "127.0.0.1")
    assert reason is not None and "no auth.addr.brick1.allow" in reason


def test_allow_exact_and_wildcards():
    options = {"auth.addr.brick1.allow": ("10.0.0.5", "192.168.1.*")}
    assert check_address(options, "brick1", "10.0.0.5") is None
    assert check_address(options, "brick1", "192.168.1.77") is None
    assert "not allowed" in check_address(options, "brick1", "10.0.0.6")


def test_reject_is_checked_first():
    options = {"auth.addr.b.allow": ("*",), "auth.addr.b.reject": ("10.*",)}
    assert check_address(options, "b", "127.0.0.1") is None
    assert "rejected" in check_address(options, "b", "10.1.2.3")


def test_options_of_another_subvolume_do_not_apply():
    options = {"auth.addr.brick1.allow": ("*",)}
    assert check_address(options, "brick2", "127.0.0.1") is not None


@pytest.mark.parametrize("text", ["127.0.0.1,10.0.0.*", "127.0.0.1, 10.0.0.*"])
def test_comma_text_is_accepted_too(text):
    options = {"auth.addr.v.allow": text}
    assert check_address(options, "v", "10.0.0.9") is None
    assert check_address(options, "v", "11.0.0.9") is not None
