"""Operator endpoints (remove, decommission) on an in-process node with both a cluster
secret and client tokens: an admin token or the secret's signature is enough; neither,
or a token of another role, is refused and nothing changes."""

from __future__ import annotations

from pathlib import Path

import httpx

from a3redis.cluster.peer_auth import operator_headers
from tests.node.conftest import Start

SECRET = "a-cluster-secret-for-operator-tests-0123"
ADMIN = "admin-token-0123456789"
READER = "reader-token-0123456789"


async def test_an_admin_token_or_the_secrets_signature_is_enough(
    start_node: Start, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ADMIN} admin\n{READER} readonly\n")
    node = await start_node(CLUSTER_SECRET=SECRET, CLIENT_TOKENS_FILE=str(tokens))
    url = f"http://127.0.0.1:{node.ports.http}/api/members/node-77/remove"

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    signed = operator_headers({"CLUSTER_SECRET": SECRET}, "remove:node-77")
    wrong = operator_headers({"CLUSTER_SECRET": "x" * 32}, "remove:node-77")
    async with httpx.AsyncClient(timeout=10) as http:
        # Either proof reaches the operation, which knows no node-77.
        assert (await http.post(url, headers=bearer(ADMIN))).status_code == 404
        assert (await http.post(url, headers=signed)).status_code == 404
        # Neither: the signature's refusal; a token of another role: the token's.
        assert (await http.post(url)).status_code == 401
        assert (await http.post(url, headers=wrong)).status_code == 401
        assert (await http.post(url, headers=bearer(READER))).status_code == 403
        decommission = url.replace("/remove", "/decommission")
        assert (await http.post(decommission)).status_code == 401
