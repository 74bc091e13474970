"""Tables for the upload-destination policy (protocol.md §4 rule 9)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.netpolicy import address_allowed, is_public, upload_url_problem

GOOD_URLS = [
    "https://uploads.example.gov/files/",
    "https://uploads.example.gov",
    "https://uploads.example.gov:8443/files/?case=1",
    "https://UPLOADS.Example.GOV/files/",
    "HTTPS://uploads.example.gov/files/",
    "https://xn--bcher-kva.example/files/",
    "https://8.8.8.8/files/",
    "https://[2606:4700::1111]/files/",
    "https://[2606:4700::1111]:1080/files/",
    "https://[::ffff:8.8.8.8]/files/",
    "https://[2002:0808:0808::1]/",  # 6to4 of a public address
    "https://[64:ff9b::808:808]/",  # NAT64 of a public address
    "https://a-b.c-d.example/",
    "https://host.example:65535/",
    "https://host.example:1/",
]

BAD_URLS = [
    # scheme
    ("http://uploads.example.gov/files/", "plain http"),
    ("ftp://uploads.example.gov/", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("uploads.example.gov/files", "scheme"),
    ("//uploads.example.gov/files", "scheme"),
    ("https:uploads.example.gov", "no host"),
    ("https:///files", "no host"),
    ("https://", "no host"),
    ("", "not a URL"),
    # loopback, private and friends as IP literals
    ("https://127.0.0.1/", "loopback"),
    ("https://127.255.255.254/", "loopback"),
    ("https://localhost/", "loopback"),
    ("https://LOCALHOST/", "loopback"),
    ("https://foo.localhost/", "loopback"),
    ("https://[::1]/", "loopback"),
    ("https://10.1.2.3/", "public"),
    ("https://172.16.0.1/", "public"),
    ("https://172.31.255.255/", "public"),
    ("https://192.168.1.1/", "public"),
    ("https://169.254.169.254/latest/meta-data/", "public"),
    ("https://100.64.0.1/", "public"),
    ("https://100.127.255.255/", "public"),
    ("https://0.0.0.0/", "public"),
    ("https://224.0.0.1/", "public"),
    ("https://239.255.255.250/", "public"),
    ("https://240.0.0.1/", "public"),
    ("https://255.255.255.255/", "public"),
    ("https://192.0.2.1/", "public"),
    ("https://198.18.0.1/", "public"),
    ("https://[::]/", "public"),
    ("https://[fe80::1]/", "public"),
    ("https://[fc00::1]/", "public"),
    ("https://[fd12:3456::1]/", "public"),
    ("https://[fec0::1]/", "public"),
    ("https://[ff02::1]/", "public"),
    ("https://[::ffff:127.0.0.1]/", "public"),
    ("https://[::ffff:10.0.0.1]/", "public"),
    ("https://[::ffff:100.64.0.1]/", "public"),
    ("https://[::ffff:169.254.169.254]/", "public"),
    ("https://[::127.0.0.1]/", "public"),
    ("https://[::10.0.0.1]/", "public"),
    ("https://[2002:7f00:1::]/", "public"),
    ("https://[2002:a00:1::]/", "public"),
    ("https://[64:ff9b::7f00:1]/", "public"),
    ("https://[64:ff9b::a00:1]/", "public"),
    ("https://[64:ff9b:1::1]/", "public"),
    ("https://[2001::1]/", "public"),  # Teredo
    ("https://[2001:db8::1]/", "public"),
    ("https://[100::1]/", "public"),
    ("https://[fe80::1%25eth0]/", "zone"),
    # numeric tricks a C resolver would read as IPv4
    ("https://2130706433/", "numeric"),
    ("https://127.1/", "numeric"),
    ("https://0x7f.0.0.1/", "numeric"),
    ("https://0x7f000001/", "numeric"),
    ("https://0177.0.0.1/", "numeric"),
    ("https://127.000.000.001/", "numeric"),
    ("https://8.8.8.8.8/", "numeric"),
    # userinfo, ports, fragments, characters
    ("https://user@uploads.example.gov/", "userinfo"),
    ("https://user:pw@uploads.example.gov/", "userinfo"),
    ("https://uploads.example.gov@10.0.0.1/", "userinfo"),
    ("https://uploads.example.gov:0/", "port 0"),
    ("https://uploads.example.gov:/", "empty port"),
    ("https://uploads.example.gov:65536/", "port"),
    ("https://uploads.example.gov:abc/", "port"),
    ("https://uploads.example.gov:-1/", "port"),
    ("https://uploads.example.gov/files#x", "fragment"),
    ("https://uploads.example.gov/files#", "fragment"),
    ("https://uploads.exam\tple.gov/", "characters"),
    ("https://uploads.example.gov/\n", "characters"),
    ("https://uploads.example.gov/ x", "characters"),
    ("https://evil.example\\@uploads.example.gov/", "characters"),
    ("https://bücher.example/", "characters"),
    ("https://uploads.example.gov\u3002evil/", "characters"),
    ("https://ｅｘａｍｐｌｅ.com/", "characters"),
    ("https://uploads.example.gov./", "DNS name"),
    ("https://-bad.example/", "DNS name"),
    ("https://bad-.example/", "DNS name"),
    ("https://under_score.example/", "DNS name"),
    ("https://a..b/", "DNS name"),
    ("https://%31%32%37.0.0.1/", "DNS name"),
    ("https://" + "a" * 64 + ".example/", "DNS name"),
    ("https://" + ".".join(["a" * 60] * 5) + "/", "too long"),
    ("https://[not-an-ip]/", "parse"),
    ("https://[10.0.0.1]/", ""),
    ("https://" + "a" * 3000 + ".example/", "too long"),
]


@pytest.mark.parametrize("url", GOOD_URLS)
def test_good_urls_pass(url: str) -> None:
    assert upload_url_problem(url, allow_plain_http_loopback=False) is None
    assert upload_url_problem(url, allow_plain_http_loopback=True) is None


@pytest.mark.parametrize(("url", "why"), BAD_URLS)
def test_bad_urls_fail_for_the_right_reason(url: str, why: str) -> None:
    for allow in (False, True):
        problem = upload_url_problem(url, allow_plain_http_loopback=allow)
        assert problem is not None, url
        assert why.lower() in problem.lower(), (url, problem)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1080/files/",
        "http://127.9.9.9/files/",
        "http://localhost:1080/files/",
        "http://LocalHost/files/",
        "http://[::1]:1080/files/",
    ],
)
def test_plain_http_loopback_only_when_allowed(url: str) -> None:
    assert upload_url_problem(url, allow_plain_http_loopback=True) is None
    problem = upload_url_problem(url, allow_plain_http_loopback=False)
    assert problem is not None and "not enabled" in problem


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://8.8.8.8/",
        "http://uploads.example.gov/",
        "http://foo.localhost/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://2130706433/",
    ],
)
def test_plain_http_elsewhere_never(url: str) -> None:
    for allow in (False, True):
        assert upload_url_problem(url, allow_plain_http_loopback=allow) is not None


def test_https_to_loopback_refused_even_when_testing_switch_is_on() -> None:
    assert upload_url_problem("https://127.0.0.1/", allow_plain_http_loopback=True) is not None
    assert upload_url_problem("https://localhost/", allow_plain_http_loopback=True) is not None


@pytest.mark.parametrize(
    ("ip", "public"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("100.63.255.255", True),
        ("100.128.0.0", True),
        ("172.15.255.255", True),
        ("172.32.0.0", True),
        ("223.255.255.255", True),
        ("2606:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("2002:808:808::1", True),
        ("64:ff9b::808:808", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("100.64.0.0", False),
        ("172.16.0.0", False),
        ("169.254.1.1", False),
        ("192.168.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.0", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("fdff::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:192.168.0.1", False),
        ("::127.0.0.1", False),
        ("2002:c0a8:1::1", False),
        ("64:ff9b::c0a8:1", False),
        ("64:ff9b:1::8.8.8.8", False),
        ("2001::8.8.8.8", False),
        ("4000::1", False),
    ],
)
def test_address_allowed_table(ip: str, public: bool) -> None:
    assert address_allowed(ip, allow_loopback=False) is public
    assert is_public(ipaddress.ip_address(ip)) is public


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.0.0.53", "::1"])
def test_loopback_connect_only_when_allowed(ip: str) -> None:
    assert address_allowed(ip, allow_loopback=True)
    assert not address_allowed(ip, allow_loopback=False)


@pytest.mark.parametrize("ip", ["::ffff:127.0.0.1", "10.0.0.1", "fe80::1", "0.0.0.0", "::"])
def test_allow_loopback_does_not_open_other_ranges(ip: str) -> None:
    assert not address_allowed(ip, allow_loopback=True)


@pytest.mark.parametrize("ip", ["", "localhost", "example.com", "1.2.3", "300.1.1.1", "::g", 5])
def test_address_allowed_refuses_non_addresses(ip: object) -> None:
    assert not address_allowed(ip, allow_loopback=True)  # type: ignore[arg-type]


@given(st.ip_addresses(v=4))
def test_every_blocked_v4_is_blocked_in_every_v6_embedding(addr: ipaddress.IPv4Address) -> None:
    public = is_public(addr)
    n = int(addr)
    for form in (
        ipaddress.IPv6Address((0xFFFF << 32) | n),  # mapped
        ipaddress.IPv6Address(n) if n > 1 else None,  # compatible (:: and ::1 are special)
        ipaddress.IPv6Address((0x2002 << 112) | (n << 80)),  # 6to4
        ipaddress.IPv6Address((0x64FF9B << 96) | n),  # NAT64
    ):
        if form is not None:
            assert is_public(form) is public, form


@given(st.text(max_size=80))
def test_never_raises_on_any_text(text: str) -> None:
    for allow in (False, True):
        problem = upload_url_problem(text, allow_plain_http_loopback=allow)
        assert problem is None or isinstance(problem, str)
        address_allowed(text, allow_loopback=allow)


@given(
    st.sampled_from(["https://", "http://", "HTTPS://"]),
    st.text(alphabet="0123456789abcdefx.:[]@%-_", max_size=40),
    st.sampled_from(["", "/", "/files/", "?q=1", "#f"]),
)
def test_accepted_https_url_never_names_a_non_public_literal(
    scheme: str, host: str, tail: str
) -> None:
    url = scheme + host + tail
    if upload_url_problem(url, allow_plain_http_loopback=False) is None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        assert parts.scheme == "https"
        assert "@" not in parts.netloc
        try:
            addr = ipaddress.ip_address(parts.hostname or "")
        except ValueError:
            return
        assert is_public(addr)
