"""The gateway's Server-Timing header names the parts of an answer (its NATS requests and the
render), each request's own, even when two requests run at once."""

import asyncio

from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.gateway.timing import ServerTiming, part, server_timing


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/page")
    async def page():
        async def ask(name: str, seconds: float):
            with part(name):
                await asyncio.sleep(seconds)

        await asyncio.gather(ask("GetSequence", 0.02), ask("ListEnrollments", 0.01))
        with part("render"):
            pass
        return {"ok": True}

    @app.get("/plain")
    async def plain():
        return {"ok": True}

    app.add_middleware(ServerTiming)
    return app


def test_each_part_of_an_answer_is_named_with_its_duration_inside_the_whole():
    with TestClient(_app()) as client:
        timing = server_timing(client.get("/page").headers["server-timing"])
    assert set(timing) == {"app", "GetSequence", "ListEnrollments", "render"}
    assert timing["GetSequence"] >= 20.0
    assert timing["ListEnrollments"] >= 10.0
    assert timing["app"] >= timing["GetSequence"]


def test_an_answer_without_parts_has_only_the_whole_and_parts_do_not_leak_across_requests():
    with TestClient(_app()) as client:
        client.get("/page")
        header = client.get("/plain").headers["server-timing"]
    assert header.startswith("app;dur=")
    assert set(server_timing(header)) == {"app"}


def test_the_parser_sums_parts_of_one_name_and_ignores_entries_without_a_duration():
    assert server_timing("app;dur=5.5, GetSequence;dur=1.0, GetSequence;dur=2.0, miss, x;desc=y") \
        == {"app": 5.5, "GetSequence": 3.0}


def test_a_part_outside_a_request_is_harmless():
    with part("alone"):
        pass
