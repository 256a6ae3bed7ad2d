"""One test per row of the machine rules (sequences/machine_rules.py, docs/machine-rules.md)."""

from __future__ import annotations

from sequences.machine_rules import RULES, Facts, classify

BROWSER = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
           " Chrome/131.0 Safari/537.36")
GMAIL_PROXY = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0"
               " (via ggpht.com GoogleImageProxy)")


def facts(kind="click", method="GET", user_agent=BROWSER, client_ip="203.0.113.7",
          seconds_since_sent=3600.0, other_link_clicked_within=None):
    return Facts(kind, method, user_agent, client_ip, seconds_since_sent,
                 other_link_clicked_within)


def rule_of(f: Facts):
    verdict = classify(f)
    return verdict.machine, verdict.rule


def test_a_person_in_a_browser_an_hour_later_is_a_person():
    assert rule_of(facts()) == (False, None)
    assert rule_of(facts(kind="open")) == (False, None)


def test_head_request():
    assert rule_of(facts(method="HEAD")) == (True, "head-request")
    assert rule_of(facts(kind="open", method="HEAD")) == (True, "head-request")


def test_google_image_prefetch():
    assert rule_of(facts(kind="open", user_agent=GMAIL_PROXY, seconds_since_sent=20)) == (
        True, "google-image-prefetch")


def test_google_image_proxy_open_later_is_the_readers():
    assert rule_of(facts(kind="open", user_agent=GMAIL_PROXY, seconds_since_sent=600)) == (
        False, "google-image-proxy-open")


def test_apple_mail_privacy_protection():
    assert rule_of(facts(kind="open", user_agent="Mozilla/5.0", client_ip="17.58.10.3")) == (
        True, "apple-mail-privacy")
    # the same bare user agent elsewhere, or a browser on Apple's network, is not MPP
    assert rule_of(facts(kind="open", user_agent="Mozilla/5.0", client_ip="198.51.100.1"))[1] \
        != "apple-mail-privacy"
    assert rule_of(facts(kind="open", client_ip="17.58.10.3")) == (False, None)


def test_too_soon_after_sending():
    assert rule_of(facts(seconds_since_sent=1.5)) == (True, "too-soon-after-sending")
    assert rule_of(facts(kind="open", seconds_since_sent=0.2)) == (True, "too-soon-after-sending")
    assert rule_of(facts(seconds_since_sent=30)) == (False, None)


def test_link_burst():
    assert rule_of(facts(other_link_clicked_within=0.4)) == (True, "link-burst")
    assert rule_of(facts(other_link_clicked_within=8.0)) == (False, None)
    # opens have no links
    assert rule_of(facts(kind="open", other_link_clicked_within=0.1)) == (False, None)


def test_scanner_user_agent():
    for agent in ("python-requests/2.32", "curl/8.5.0", "BingPreview/1.0b",
                  "Barracuda Sentinel (EE)", "Mimecast URL protect", "Proofpoint URL Defense",
                  ""):
        assert rule_of(facts(user_agent=agent)) == (True, "scanner-user-agent"), agent


def test_scanner_network():
    assert rule_of(facts(client_ip="209.222.82.17")) == (True, "scanner-network")
    assert rule_of(facts(client_ip="64.235.150.1")) == (True, "scanner-network")
    assert rule_of(facts(client_ip="not an address")) == (False, None)


def test_every_rule_has_a_test_and_a_row_in_the_docs():
    from pathlib import Path
    tested = Path(__file__).read_text()
    documented = (Path(__file__).parents[2] / "docs" / "machine-rules.md").read_text()
    for rule in RULES:
        assert f"def test_{rule.name.replace('-', '_')}" in tested, rule.name
        assert f"`{rule.name}`" in documented, rule.name
