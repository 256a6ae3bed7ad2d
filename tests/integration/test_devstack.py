"""The dev stack's local servers: NATS with JetStream, embedded PostgreSQL, mail capture."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import nats
import pytest
from sqlalchemy import create_engine, text

from sequences.devstack.capture import read_captured, serve
from sequences.devstack.nats_server import NatsServer
from sequences.devstack.ports import free_port, wait_for_port
from sequences.devstack.postgres import EmbeddedPostgres, create_database, drop_database

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


async def test_nats_server_runs_jetstream(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats", free_port()) as server:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="DEVSTACK", subjects=["devstack.>"])
            ack = await js.publish("devstack.hello", b"hello")
            assert (ack.stream, ack.seq) == ("DEVSTACK", 1)
            assert (await js.get_msg("DEVSTACK", 1)).data == b"hello"
        finally:
            await nc.close()
    assert (tmp_path / "nats" / "jetstream").is_dir()


async def test_nats_server_keeps_streams_after_a_kill(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", free_port(), sync_always=True)
    server.start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="DURABLE", subjects=["durable.>"])
        await js.publish("durable.one", b"kept")
        await nc.close()

        server.kill()
        server.start()

        nc = await nats.connect(server.url)
        try:
            assert (await nc.jetstream().get_msg("DURABLE", 1)).data == b"kept"
        finally:
            await nc.close()
    finally:
        server.stop()


def _postmaster_pid(pg: EmbeddedPostgres) -> int:
    return int((pg.pgdata / "postmaster.pid").read_text().splitlines()[0])


def _process_alive(pid: int) -> bool:
    # A zombie has exited; it only waits for PID 1 to reap it (slowly, in some sandboxes).
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    # Shared by this module's tests: initdb alone takes over a second.
    with EmbeddedPostgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


def test_embedded_postgres_keeps_data_across_restarts(pg: EmbeddedPostgres) -> None:
    assert pg.url.startswith("postgresql+psycopg://postgres@/postgres?host=")
    engine = create_engine(pg.url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept (value int)"))
        conn.execute(text("INSERT INTO kept VALUES (42)"))
    engine.dispose()

    postmaster = _postmaster_pid(pg)
    pg.stop()
    assert not _process_alive(postmaster)

    url = pg.start()
    assert _postmaster_pid(pg) != postmaster
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM kept")).scalar_one() == 42
    engine.dispose()


def test_create_database_copies_a_template(pg: EmbeddedPostgres) -> None:
    engine = create_engine(pg.url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE migrated (id int)"))
    engine.dispose()

    scratch_url = create_database(pg.url, "scratch", template="postgres")
    engine = create_engine(scratch_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_database()")).scalar_one() == "scratch"
        assert conn.execute(text("SELECT count(*) FROM migrated")).scalar_one() == 0
    engine.dispose()

    drop_database(pg.url, "scratch")
    engine = create_engine(pg.url)
    with engine.connect() as conn:
        names = conn.execute(text("SELECT datname FROM pg_database")).scalars().all()
    engine.dispose()
    assert "scratch" not in names


def _korean_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "영업팀 <sales@example.com>"
    message["To"] = "고객 <customer@example.com>"
    message["Subject"] = "안녕하세요, 후속 연락드립니다"
    message["Message-ID"] = "<follow-up-1@example.com>"
    # The second line starts with a dot, which SMTP must stuff and unstuff.
    message.set_content("지난주 미팅 감사합니다.\n.다음 단계를 논의하고 싶습니다.\n")
    return message


def _plain_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "sales@example.com"
    message["To"] = "a@example.com, b@example.com"
    message["Subject"] = "Plain ASCII"
    message.set_content("Just checking in.\n")
    return message


async def test_mail_capture_stores_and_lists_messages(tmp_path: Path) -> None:
    mail_dir = tmp_path / "mail"
    smtp_port, http_port = free_port(), free_port()
    task = asyncio.create_task(serve(mail_dir, HOST, smtp_port, http_port))
    try:
        await asyncio.to_thread(wait_for_port, HOST, smtp_port, 5)
        await asyncio.to_thread(wait_for_port, HOST, http_port, 5)

        korean_raw = _korean_message().as_bytes(policy=policy.SMTP)
        await aiosmtplib.send(
            korean_raw,
            sender="bounces@example.com",
            recipients=["customer@example.com"],
            hostname=HOST,
            port=smtp_port,
        )
        await aiosmtplib.send(_plain_message(), hostname=HOST, port=smtp_port)

        first, second = read_captured(mail_dir)
        assert first["Subject"] == "안녕하세요, 후속 연락드립니다"
        assert first["From"].addresses[0].display_name == "영업팀"
        assert first.get_content() == "지난주 미팅 감사합니다.\n.다음 단계를 논의하고 싶습니다.\n"
        assert second["Subject"] == "Plain ASCII"
        assert second.get_content() == "Just checking in.\n"
        # Stored byte for byte as sent.
        assert sorted(mail_dir.glob("*.eml"))[0].read_bytes() == korean_raw

        viewer = f"http://{HOST}:{http_port}"
        async with httpx.AsyncClient(base_url=viewer, trust_env=False) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}

            listed = (await http.get("/messages")).json()
            assert [m["subject"] for m in listed] == ["Plain ASCII", "안녕하세요, 후속 연락드립니다"]
            plain, korean = listed
            assert korean["mail_from"] == "bounces@example.com"
            assert korean["rcpt_to"] == ["customer@example.com"]
            assert korean["message_id"] == "<follow-up-1@example.com>"
            assert plain["rcpt_to"] == ["a@example.com", "b@example.com"]
            assert plain["received_at"] >= korean["received_at"]

            raw = await http.get(f"/messages/{korean['id']}")
            assert raw.headers["content-type"] == "message/rfc822"
            assert raw.content == korean_raw
            assert (await http.get("/messages/not-an-id")).status_code == 404

            page = await http.get("/")
            assert "안녕하세요, 후속 연락드립니다" in page.text
            assert f'href="/messages/{plain["id"]}"' in page.text
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
