"""The gateway with the real all-mpnet-base-v2 encoder on the bundled HELM pack router: batched
decisions over HTTP equal ``Router.route`` for the same texts and policy."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from benchroute.serve.app import GatewayConfig, build_gateway, create_app  # noqa: E402
from benchroute.serve.upstreams import Upstream  # noqa: E402
from tests.fake_upstream import closed_port, serving  # noqa: E402

pytestmark = pytest.mark.real_model

TEXTS = [
    "What is the derivative of x squared plus three x with respect to x?",
    "Which organelle produces most of the ATP in a eukaryotic cell?",
    "In contract law, what is consideration and why does a promise need it to be binding?",
    "Who wrote the Federalist Papers and what were they meant to persuade readers of?",
    "A ball is dropped from 20 metres; how long does it take to reach the ground?",
    "Which data structure gives O(1) average lookup by key?",
    "What is the capital of Australia?",
    "Explain the difference between a virus and a bacterium.",
    "What does GDP measure, and what does it leave out?",
    "Is it ever morally permissible to lie to protect someone?",
    "Solve for x: 3x - 7 = 11.",
    "Which enzyme unwinds the DNA double helix during replication?",
]


@pytest.fixture(scope="module")
def pack_router(mpnet_installed):
    from benchroute.default import default_router

    return default_router()


def test_gateway_decisions_equal_router_route_with_the_real_encoder(pack_router):
    router = pack_router
    costs = {m: float(i + 1) for i, m in enumerate(router.models_)}
    url = f"http://127.0.0.1:{closed_port()}/v1"   # decisions only: no upstream is called
    ups = {m: Upstream(m, url, m, cost=costs[m]) for m in router.models_}
    gw = build_gateway(router, ups, GatewayConfig())
    entries = {"benchroute-best": ("best", {}),
               "benchroute-smallest_sufficient-0.6": ("smallest_sufficient", {"tau": 0.6})}
    got: dict[tuple[str, str], dict] = {}
    with serving(create_app(gw)) as base:
        def one(text: str, entry: str) -> None:
            got[(text, entry)] = httpx.post(base + "/v1/route", timeout=120,
                                            json={"input": text, "model": entry}).json()
        threads = [threading.Thread(target=one, args=(t, e)) for t in TEXTS for e in entries]
        for th in threads:                         # concurrent: decided in shared batches
            th.start()
        for th in threads:
            th.join(timeout=300)
    for entry, (policy, params) in entries.items():
        expected = router.route_table(TEXTS, policy=policy, costs=costs, **params)
        assert [got[(t, entry)]["model"] for t in TEXTS] == expected["model"].tolist()
        assert [got[(t, entry)]["p"][got[(t, entry)]["model"]] for t in TEXTS] == \
            pytest.approx(expected["p"].to_numpy(), abs=1e-4)
