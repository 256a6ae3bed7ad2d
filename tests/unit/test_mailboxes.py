"""Mailboxes, the pure parts: secrets sealed and rotated, the warm-up ramp, the rotation over a
pool, and the mailbox body's validation naming its fields."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest
from pydantic import ValidationError

from contracts.commands import MailboxRequest
from contracts.values import MailboxLimits
from sequences.encryption import NoKeys, SecretBox, SecretsUnreadable
from services.mailer.rotation import Candidate, cap_on, choose


def test_secrets_are_sealed_and_a_rotated_key_keeps_opening_them():
    old, new = SecretBox.new_key(), SecretBox.new_key()
    sealed = SecretBox([old]).seal({"smtp_password": "pw 1", "imap_password": None})
    assert "pw 1" not in sealed
    rotated_box = SecretBox([new, old])  # a new key first: the old one still opens
    assert rotated_box.open(sealed) == {"smtp_password": "pw 1"}
    resealed = rotated_box.rotate(sealed)
    assert SecretBox([new]).open(resealed) == {"smtp_password": "pw 1"}
    with pytest.raises(SecretsUnreadable):
        SecretBox([new]).open(sealed)  # the old key gone before rotate-secrets
    with pytest.raises(NoKeys):
        SecretBox([]).seal({"smtp_password": "x"})


def test_the_warm_up_ramp_adds_each_day_up_to_the_cap():
    limits = MailboxLimits(daily_cap=50, warmup_start=10, warmup_step=15)
    connected = date(2027, 3, 1)
    assert [cap_on(limits, connected, date(2027, 3, d)) for d in (1, 2, 3, 4, 9)] == \
        [10, 25, 40, 50, 50]
    assert cap_on(MailboxLimits(daily_cap=7), connected, date(2027, 3, 9)) == 7
    assert cap_on(MailboxLimits(), connected, date(2027, 3, 9)) is None


def test_new_enrollments_go_to_the_mailbox_with_the_most_room():
    pool = [Candidate("a", 10, 0), Candidate("b", 20, 0), Candidate("c", 30, 0)]
    given = Counter()
    for _ in range(60):
        chosen = choose(pool)
        chosen.used += 1
        given[chosen.address] += 1
    assert given == {"a": 10, "b": 20, "c": 30}
    unlimited = [Candidate("x", None, 0), Candidate("y", None, 0)]
    turns = []
    for _ in range(4):
        chosen = choose(unlimited)
        chosen.used += 1
        turns.append(chosen.address)
    assert turns == ["x", "y", "x", "y"]
    assert choose([]) is None


@pytest.mark.parametrize("body, field", [
    ({"smtp": {"host": "h", "port": 70000}}, "smtp.port"),
    ({"smtp": {"host": "-bad"}}, "smtp.host"),
    ({"smtp": {"host": "h", "security": "ssl"}}, "smtp.security"),
    ({"smtp": {"host": "h"}, "auth": "oauth2"}, "oauth_provider"),
    ({"smtp": {"host": "h"}, "oauth_provider": "google"}, "oauth_provider"),
    ({"smtp": {"host": "h", "password": "p"}, "auth": "oauth2", "oauth_provider": "google"},
     "smtp"),
    ({"smtp": {"host": "h"}, "limits": {"hourly_cap": 0}}, "limits.hourly_cap"),
    ({"smtp": {"host": "h"}, "limits": {"jitter_seconds": -1}}, "limits.jitter_seconds"),
    ({"smtp": {"host": "h"}, "limits": {"daily_cap": 5, "warmup_start": 6}}, "limits"),
    ({"smtp": {"host": "h", "password": "a\r\nb"}}, "smtp.password"),
])
def test_a_bad_mailbox_is_refused_naming_its_field(body, field):
    with pytest.raises(ValidationError) as refused:
        MailboxRequest(address="rep@sales.example", **body)
    assert field in {".".join(map(str, e["loc"])) for e in refused.value.errors()}
