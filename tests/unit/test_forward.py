"""The gateway's forwarding under upstream faults, on httpx's mock transport: each fault a
review found through a real socket (a 5xx body that breaks off, a stream dead before its first
byte or broken mid-event, gzip, a trickle past the timeout, a hung upstream holding every
connection) as a byte stream that does it, so each case is exact and takes milliseconds."""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import pytest

from benchroute.serve.forward import Forwarder
from benchroute.serve.upstreams import Upstream

UPSTREAMS = {m: Upstream(m, f"http://127.0.0.1:9/{m}/v1", f"{m}-id")  # the mock answers them
             for m in ("m0", "m1", "m2")}
EVENT = b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'
OK = json.dumps({"choices": [{"message": {"content": "answer"}}]}).encode()


class Body(httpx.AsyncByteStream):
    """A response body: its parts in order; an exception instance is raised there, a float
    sleeps that many seconds."""

    def __init__(self, *parts: object) -> None:
        self.parts = parts

    async def __aiter__(self):  # type: ignore[override]
        for part in self.parts:
            if isinstance(part, BaseException):
                raise part
            if isinstance(part, float):
                await asyncio.sleep(part)
                continue
            yield part


def forwarder(faults, timeout=1.0, connections=256, retries=1):
    """A Forwarder whose upstream ``m`` answers ``faults[m]()`` (an httpx.Response), else OK;
    ``calls`` counts the tries per model."""
    calls = {m: 0 for m in UPSTREAMS}
    breaks: list[tuple[str, str]] = []
    noted: list[tuple[str, str | None]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        model = request.url.path.split("/")[1]
        calls[model] += 1
        if model in faults:
            return await faults[model]()
        return httpx.Response(200, content=OK, headers={"content-type": "application/json"})

    fw = Forwarder(UPSTREAMS, timeout=timeout, retries=retries, connections=connections,
                   transport=httpx.MockTransport(handler),
                   on_call=lambda m, s, kind: noted.append((m, kind)),
                   on_break=lambda m, kind: breaks.append((m, kind)))
    return fw, calls, noted, breaks


async def drain(answer) -> bytes:
    return b"".join([c async for c in answer.stream]) if answer.stream else answer.content


def run(coro):
    return asyncio.run(coro)


def streamed(faults, order=("m1",)) -> bytes:
    """What a client of a streamed call receives, drained."""
    async def go():
        fw, _, _, _ = forwarder(faults)
        ans = await fw.chat({"messages": [], "stream": True}, order, stream=True)
        body = await drain(ans)
        await fw.close()
        return body

    return run(go())


def test_a_5xx_whose_body_breaks_off_is_a_failed_try_and_retried():
    """It raised out of the forwarder: a plain-text 500 with no retry and no log line."""
    async def cut():
        return httpx.Response(500, stream=Body(b'{"err', httpx.ReadError("cut")))

    async def go():
        fw, calls, noted, _ = forwarder({"m1": cut})
        ans = await fw.chat({"messages": []}, ("m1", "m2"), stream=False)
        await fw.close()
        return ans, calls, noted

    ans, calls, noted = run(go())
    assert ans.status == 200 and ans.model == "m2" and calls == {"m0": 0, "m1": 1, "m2": 1}
    assert [f.kind for f in ans.failures] == ["http_500"]
    assert "its body broke off" in ans.failures[0].message
    assert noted == [("m1", "http_500"), ("m2", None)]


def test_the_timeout_bounds_a_whole_try_and_a_stalled_body_is_a_timeout():
    """A byte every 0.05 s never reached httpx's per-read limit (14.8 s answered at 5 s);
    200 headers and then nothing was a 502 'read'."""
    async def trickle():
        return httpx.Response(200, stream=Body(*[x for b in OK for x in (0.05, bytes([b]))]))

    async def stall():
        return httpx.Response(200, stream=Body(b'{"id', 30.0))

    async def go(fault):
        fw, calls, _, _ = forwarder({"m1": fault}, timeout=0.3, retries=0)
        t = asyncio.get_running_loop().time()
        ans = await fw.chat({"messages": []}, ("m1",), stream=False)
        await fw.close()
        return ans, asyncio.get_running_loop().time() - t

    for fault in (trickle, stall):
        ans, took = run(go(fault))
        assert ans.status == 504 and [f.kind for f in ans.failures] == ["timeout"]
        assert took < 2.0


def test_a_stream_dead_before_its_first_byte_is_retried():
    async def dead():
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=Body(httpx.ReadError("gone")))

    async def empty():
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Body())

    async def go(fault):
        fw, calls, _, _ = forwarder({"m1": fault})
        ans = await fw.chat({"messages": [], "stream": True}, ("m1", "m2"), stream=True)
        body = await drain(ans)
        await fw.close()
        return ans, body, calls

    for fault in (dead, empty):
        ans, body, calls = run(go(fault))
        assert ans.model == "m2" and calls["m2"] == 1 and [f.kind for f in ans.failures] == ["read"]


def test_a_broken_stream_ends_with_a_whole_error_event_and_is_counted():
    """The error event was glued to the half-sent event ('…"obj' + 'data: {"error"…'): the
    openai client's JSON parser failed instead of raising the error."""
    async def broken():
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=Body(EVENT, EVENT[:20], EVENT[20:], b'data: {"obj',
                                          httpx.ReadError("cut")))

    async def go():
        fw, calls, _, breaks = forwarder({"m1": broken})
        ans = await fw.chat({"messages": [], "stream": True}, ("m1", "m2"), stream=True)
        assert fw.slots["m1"]._value == 255  # the open stream holds one
        body = await drain(ans)
        await fw.close()
        assert fw.slots["m1"]._value == 256
        return ans, body, calls, breaks

    ans, body, calls, breaks = run(go())
    assert ans.model == "m1" and calls["m2"] == 0  # started: never retried
    events = [e for e in body.split(b"\n\n") if e]
    assert events[:2] == [EVENT.strip(), EVENT.strip()] and len(events) == 3
    assert json.loads(events[2].removeprefix(b"data: "))["error"]["code"] == 502
    assert breaks == [("m1", "stream")]


def test_a_compressed_stream_reaches_the_client_decoded():
    """Raw gzip bytes went out labelled text/event-stream, without a Content-Encoding."""
    async def gz():
        return httpx.Response(200, headers={"content-type": "text/event-stream",
                                            "content-encoding": "gzip"},
                              stream=Body(gzip.compress(EVENT * 3)))

    assert streamed({"m1": gz}) == EVENT * 3


def test_rate_limit_headers_pass_back_with_a_4xx():
    async def limited():
        return httpx.Response(429, json={"error": {"message": "slow down"}},
                              headers={"retry-after": "7", "x-ratelimit-remaining-requests": "0",
                                       "x-request-id": "req-1", "server": "fake"})

    async def go():
        fw, calls, _, _ = forwarder({"m1": limited})
        ans = await fw.chat({"messages": []}, ("m1", "m2"), stream=False)
        await fw.close()
        return ans, calls

    ans, calls = run(go())
    assert ans.status == 429 and calls["m2"] == 0
    assert ans.headers == {"retry-after": "7", "x-ratelimit-remaining-requests": "0",
                           "x-request-id": "req-1"}


def test_a_hung_upstream_holds_only_its_own_connections():
    """One pool of 256 shared by every upstream: calls to a hung model filled it, and calls to
    a healthy one waited 7.5 s. Each upstream now has its own share; a call finding none free
    within the timeout is 'busy' and moves on."""
    async def hang():
        await asyncio.sleep(5)
        return httpx.Response(200, content=OK)

    async def go():
        fw, calls, _, _ = forwarder({"m1": hang}, timeout=2.0, connections=4)
        hung = [asyncio.create_task(fw.chat({"messages": []}, ("m1", "m2"), stream=False))
                for _ in range(8)]
        await asyncio.sleep(0.05)  # the first four hold m1's connections
        healthy = await asyncio.gather(*[fw.chat({"messages": []}, ("m2",), stream=False)
                                         for _ in range(8)])
        # answered while every call to the hung model still waits (its timeout is 2 s): no
        # wall-clock bound, which a loaded machine could miss
        waiting = sum(not h.done() for h in hung)
        done = await asyncio.gather(*hung)
        await fw.close()
        assert all(slot._value == 4 for slot in fw.slots.values())  # every try gave its back
        return healthy, waiting, done, calls

    healthy, waiting, done, calls = run(go())
    assert all(a.status == 200 and a.model == "m2" for a in healthy) and waiting == 8
    kinds = sorted(f.kind for a in done for f in a.failures)
    assert all(a.status == 200 and a.model == "m2" for a in done)  # retried on m2
    assert kinds == ["busy"] * 4 + ["timeout"] * 4 and calls["m1"] == 4


@pytest.mark.parametrize("fault_status", [500, 503])
def test_every_try_failing_is_an_openai_error(fault_status):
    async def fail():
        return httpx.Response(fault_status, json={"error": {"message": "down"}})

    async def go():
        fw, _, _, _ = forwarder({"m1": fail, "m2": fail})
        ans = await fw.chat({"messages": []}, ("m1", "m2"), stream=False)
        await fw.close()
        return ans

    ans = run(go())
    assert ans.status == fault_status
    assert json.loads(ans.content)["error"]["type"] == "upstream_error"


def test_a_stream_never_relayed_still_frees_its_connection():
    """A client gone before the first chunk is written: the relaying generator never starts,
    so its own cleanup never runs; the answer's close (the server calls it however the
    response ends) frees the connection, and closing twice is harmless."""
    async def go():
        fw, _, _, _ = forwarder({})
        ans = await fw.chat({"messages": [], "stream": True}, ("m1",), stream=True)
        assert ans.stream is not None and fw.slots["m1"]._value == 255
        await ans.close()
        await ans.close()
        freed = fw.slots["m1"]._value
        await fw.close()
        return freed

    assert run(go()) == 256


def test_a_cancelled_call_gives_its_connection_back():
    """A caller that gives up (its own deadline, a server that cancels on disconnect) kept
    its slot for good: two such calls on 2 connections made the upstream 'busy' forever
    (found by a review)."""
    async def hang():
        await asyncio.sleep(3600)

    async def go():
        fw, _, _, _ = forwarder({"m1": hang}, timeout=30.0, connections=2, retries=0)
        for _ in range(2):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(fw.chat({"messages": []}, ("m1",), stream=False), 0.05)
        free = fw.slots["m1"]._value
        await fw.close()
        return free

    assert run(go()) == 2


def test_the_old_keyword_of_the_connections_still_works():
    with pytest.warns(FutureWarning, match="'max_connections' is deprecated.*'connections'"):
        fw = Forwarder(UPSTREAMS, max_connections=8)
    assert fw.connections == 8
    run(fw.close())


@pytest.mark.parametrize("tail", [httpx.ReadError("cut"), 30.0])
def test_a_4xx_whose_body_breaks_off_or_stalls_is_passed_back_not_retried(tail):
    """It became a 502 'read' (or a 504) and went to the next model: the 429 and its
    retry-after were lost (found by fuzzing)."""
    async def limited():
        return httpx.Response(429, headers={"retry-after": "7"},
                              stream=Body(b'{"error": {"message": "slow', tail))

    async def go():
        fw, calls, _, _ = forwarder({"m1": limited}, timeout=0.3)
        ans = await fw.chat({"messages": []}, ("m1", "m2"), stream=False)
        await fw.close()
        return ans, calls

    ans, calls = run(go())
    assert (ans.status, ans.model, calls["m2"], ans.failures) == (429, "m1", 0, ())
    assert ans.headers == {"retry-after": "7"}
    assert json.loads(ans.content)["error"]["code"] == 429


def test_events_ending_in_mixed_line_ends_are_whole():
    """SSE allows a line ended by LF and a blank line ended by CRLF: such an event was held
    back as unfinished and dropped when the stream broke after it (found by fuzzing)."""
    async def mixed():
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=Body(b'data: {"a": 1}\n\r\n', b'data: {"b": 2}\r\n\n',
                                          b'data: {"c', httpx.ReadError("cut")))

    body = streamed({"m1": mixed})
    assert body.startswith(b'data: {"a": 1}\n\r\ndata: {"b": 2}\r\n\ndata: {"error"')


def test_a_stream_says_how_it_ended():
    """What the decision log writes when a stream has ended: whole, broken off upstream,
    closed by a client gone mid-stream, or never sent."""
    async def broken():
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=Body(EVENT, EVENT, httpx.ReadError("cut")))

    async def whole():
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=Body(EVENT, EVENT))

    async def go(fault, read):
        fw, _, _, _ = forwarder({"m1": fault})
        ans = await fw.chat({"messages": [], "stream": True}, ("m1",), stream=True)
        if read is None:
            await drain(ans)
        elif read:
            await ans.stream.__anext__()  # one event, then the client is gone
            await ans.stream.aclose()
        await ans.close()
        await fw.close()
        return ans.outcome()

    assert run(go(whole, None)) == "complete"
    assert run(go(broken, None)) == "upstream broke off (ReadError)"
    assert run(go(whole, True)) == "client gone"
    assert run(go(whole, False)) == "not sent"


def test_the_wait_for_a_connection_counts_in_the_timeout():
    """A try waited up to the timeout for a connection and then the timeout again for the
    answer; it is one budget now."""
    async def slow():
        await asyncio.sleep(1.0)
        return httpx.Response(200, content=OK, headers={"content-type": "application/json"})

    async def go():
        fw, _, _, _ = forwarder({"m1": slow}, timeout=1.6, connections=1, retries=0)
        first, second = await asyncio.gather(
            fw.chat({"messages": []}, ("m1",), stream=False),
            fw.chat({"messages": []}, ("m1",), stream=False))
        await fw.close()
        return first, second

    first, second = run(go())
    assert first.status == 200 and second.status == 504  # 1 s waited, 0.6 s left < 1 s
    assert [f.kind for f in second.failures] == ["timeout"]
