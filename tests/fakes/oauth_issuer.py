"""A local OAuth authorization server as far as a resource sees one: RFC 8414 metadata and a
JWKS, with keys the test holds, signs tokens with and rotates."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from .http_fake import FakeApi, Reply, Request, not_found


class FakeIssuer:
    CLIENT = ("mcp-orchestrator", "resource-secret")  # the resource's credentials for introspection

    def __init__(self) -> None:
        self.keys: list[ECKey] = [self.new_key("k1")]
        self.opaque: dict[str, dict[str, Any]] = {}  # opaque token -> its introspection answer
        self.api = FakeApi(self.respond)

    @staticmethod
    def new_key(kid: str) -> ECKey:
        return ECKey.generate_key("P-256", parameters={"kid": kid, "alg": "ES256", "use": "sig"}, private=True)

    @property
    def url(self) -> str:
        return self.api.url + "/realms/test"

    def respond(self, request: Request) -> Reply:
        if request.path == "/.well-known/oauth-authorization-server/realms/test":
            body: dict[str, Any] = {"issuer": self.url, "jwks_uri": self.url + "/jwks",
                                    "authorization_endpoint": self.url + "/authorize",
                                    "token_endpoint": self.url + "/token", "response_types_supported": ["code"],
                                    "introspection_endpoint": self.url + "/introspect"}
        elif request.path == "/realms/test/jwks":
            body = {"keys": [k.as_dict(private=False) for k in self.keys]}
        elif request.path == "/realms/test/introspect":
            basic = "Basic " + base64.b64encode(":".join(self.CLIENT).encode()).decode()
            if request.headers.get("authorization") != basic:
                return 401, "application/json", b'{"error": "invalid_client"}'
            body = self.opaque.get(request.params.get("token", ""), {"active": False})
        else:
            return not_found(request)
        return 200, "application/json", json.dumps(body).encode()

    def rotate(self, kid: str) -> None:
        """A new signing key; the old one stays published (overlap)."""
        self.keys.insert(0, self.new_key(kid))

    def token(self, audience: str, key: ECKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.url, "sub": "user-1", "aud": audience, "iat": now, "nbf": now, "exp": now + 300,
                   "scope": "orchestrate read", "client_id": "client-1", **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        key = key or self.keys[0]
        return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}, payload, KeySet([key]))

    def start(self) -> FakeIssuer:
        self.api.start()
        return self

    def stop(self) -> None:
        self.api.stop()
