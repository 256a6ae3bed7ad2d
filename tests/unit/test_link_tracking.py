"""Links in email bodies: which are rewritten to click redirects, and how (sequences/link_tracking.py),
and the bodies the mailer builds with them (services/mailer/domain.py)."""

from __future__ import annotations

import pytest

from sequences.link_tracking import html_with_links, is_trackable, links_in, text_with_links
from services.mailer.domain import Links, html_body_for, text_body_for


def tracked(link):
    return f"https://t.example/c/{link.index}"


def test_plain_urls_are_found_without_the_sentence_punctuation_after_them():
    text = ("See https://a.example/x?y=1&z=2. Or (http://b.example/p_(1)) and"
            " https://c.example/한글, then stop.")
    assert [link.url for link in links_in(text)] == [
        "https://a.example/x?y=1&z=2", "http://b.example/p_(1)", "https://c.example/한글"]


@pytest.mark.parametrize("text", [
    "no links here at all", "javascript:alert(1)", "data:text/html;base64,PHNjcmlwdD4=",
    "mailto:kim@customer.example", "http://", "https://:80/x", "http://[::1/bad",
    "https://host.example:99999/x", "ftp://files.example/a",
])
def test_bodies_without_trackable_links_stay_as_written(text):
    assert links_in(text) == []
    assert text_with_links(text, tracked) == text


def test_is_trackable_refuses_control_characters_and_overlong_urls():
    assert is_trackable("https://ok.example/a")
    assert not is_trackable("https://ok.example/a\x00b")
    assert not is_trackable("https://ok.example/" + "a" * 2100)


def test_text_part_points_each_link_at_its_redirect_in_order():
    text = "first https://a.example/1 second https://b.example/2\nagain https://a.example/1"
    assert text_with_links(text, tracked) == (
        "first https://t.example/c/0 second https://t.example/c/1\nagain https://t.example/c/2")


def test_html_part_links_show_the_original_url_and_escape_everything():
    html = html_with_links('<b>"hi"</b> https://a.example/?q=<x>&r=1', tracked)
    assert html == ('&lt;b&gt;&quot;hi&quot;&lt;/b&gt; <a href="https://t.example/c/0">'
                    'https://a.example/?q=</a>&lt;x&gt;&amp;r=1')
    assert html_with_links("see https://a.example/", None) == (
        'see <a href="https://a.example/">https://a.example/</a>')


def test_five_hundred_links_in_one_body_are_all_rewritten():
    text = "\n".join(f"link {i}: https://site.example/page/{i}" for i in range(500))
    rewritten = text_with_links(text, tracked)
    assert rewritten.count("https://t.example/c/") == 500
    assert "https://t.example/c/499" in rewritten and "site.example" not in rewritten


def test_bodies_use_redirects_only_when_clicks_are_tracked_and_the_pixel_only_for_opens():
    values = {"name": "김민수"}
    on = Links("https://t.example/t/x.gif", "https://app.example/unsubscribe/u", tracked)
    off = Links(None, "https://app.example/unsubscribe/u", None)
    template = "{{고객명}}님, https://shop.example/offer 참고하세요."
    assert "https://t.example/c/0" in text_body_for(template, values, on)
    assert "https://shop.example/offer 참고" in text_body_for(template, values, off)
    html_on, html_off = html_body_for(template, values, on), html_body_for(template, values, off)
    assert '<a href="https://t.example/c/0">https://shop.example/offer</a>' in html_on
    assert "<img" in html_on and "<img" not in html_off
    assert '<a href="https://shop.example/offer">' in html_off
    # the unsubscribe link in the footer is never a click redirect
    assert 'href="https://app.example/unsubscribe/u"' in html_on
