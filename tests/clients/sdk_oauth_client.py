"""The official MCP Python SDK's OAuthClientProvider against the built-in authorization server
(run by the SDK's own venv, like sdk_client.py).

    python sdk_oauth_client.py URL --api-key KEY [--wait-for-refresh SECONDS]

Discovery, registration, authorization and token exchange are the SDK's; the operator's part
(the consent page) is played by an HTTP client carrying the API key, following the page's form.
Prints one JSON line of what it saw; exits non-zero on any error."""

from __future__ import annotations

import argparse
import json
import re
import sys
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: list[OAuthToken] = []
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens[-1] if self.tokens else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Operator:
    """Approves the client on the consent page with the API key, as a person would."""

    def __init__(self, api_key: str):
        self.api_key = api_key
        self.result: AuthorizationCodeResult | None = None
        self.pages = 0

    async def redirect(self, url: str) -> None:
        async with httpx2.AsyncClient(timeout=30) as http:
            page = await http.get(url)
            page.raise_for_status()
            self.pages += 1
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf, page.text[:500]
            answer = await http.post(url, data={"csrf": csrf.group(1), "api_key": self.api_key,
                                                "decision": "approve"})
            assert answer.status_code == 302, answer.text[:500]
            query = parse_qs(urlsplit(answer.headers["location"]).query)
            self.result = AuthorizationCodeResult(code=query["code"][0], state=query.get("state", [None])[0],
                                                  iss=query.get("iss", [None])[0])

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


async def exercise(args: argparse.Namespace) -> dict:
    storage, operator = MemoryStorage(), Operator(args.api_key)
    auth = OAuthClientProvider(
        server_url=args.url,
        client_metadata=OAuthClientMetadata(client_name="sdk oauth test", redirect_uris=["http://127.0.0.1:3999/callback"],
                                            grant_types=["authorization_code", "refresh_token"],
                                            response_types=["code"], token_endpoint_auth_method="none"),
        storage=storage, redirect_handler=operator.redirect, callback_handler=operator.callback)
    seen: dict = {}
    # design: no keep-alive, so every step (discovery, registration, token, each MCP call) is a new
    # connection that any of the service's workers may accept
    async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30, read=300),
                                  limits=httpx2.Limits(max_keepalive_connections=0)) as client:
        async with streamable_http_client(args.url, http_client=client) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                init = await session.initialize()
                search = await session.call_tool("orchestrate_search", {"query": "SSE streams behind Caddy",
                                                                        "num_agents": 2})
                seen.update(server=init.server_info.name, search_error=search.is_error,
                            search_status=(search.structured_content or {}).get("status"))
                if args.wait_for_refresh:
                    await anyio.sleep(args.wait_for_refresh)  # the access token expires
                    listed = await session.call_tool("list_orchestrations", {})
                    seen.update(after_refresh_error=listed.is_error,
                                tasks_after_refresh=len((listed.structured_content or {}).get("tasks", [])))
    seen.update(consent_pages=operator.pages, tokens_issued=len(storage.tokens),
                refresh_rotated=len({t.refresh_token for t in storage.tokens}) == len(storage.tokens),
                scope=storage.tokens[-1].scope if storage.tokens else None,
                client_registered=storage.client is not None)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--wait-for-refresh", type=float, default=0.0)
    args = parser.parse_args()
    print(json.dumps(anyio.run(exercise, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
