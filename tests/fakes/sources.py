"""All fake search APIs at once, and the settings/environment that point the service at them."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import (arxiv_server, brave_server, github_server, hackernews_server, searxng_server,
               semantic_scholar_server, wikipedia_server)
from .http_fake import FakeApi

MODULES = {"wikipedia": wikipedia_server, "arxiv": arxiv_server, "searxng": searxng_server, "brave": brave_server,
           "github": github_server, "hackernews": hackernews_server, "semantic_scholar": semantic_scholar_server}


@dataclass
class FakeSources:
    servers: dict[str, FakeApi] = field(default_factory=dict)

    def start(self) -> FakeSources:
        self.servers = {name: module.server().start() for name, module in MODULES.items()}
        return self

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def __getitem__(self, name: str) -> FakeApi:
        return self.servers[name]

    def env(self) -> dict[str, str]:
        """Environment variables for a service whose every source is one of these fakes."""
        s = self.servers
        return {"WIKIPEDIA_API_URL": s["wikipedia"].url, "ARXIV_API_URL": s["arxiv"].url,
                "SEARXNG_URL": s["searxng"].url, "GITHUB_API_URL": s["github"].url, "HN_API_URL": s["hackernews"].url,
                "SEMANTIC_SCHOLAR_API_URL": s["semantic_scholar"].url,
                # design: the fakes' results link to real public sites; research agents must not
                # try to read them (that would resolve public names, a packet off this machine).
                "AGENT_READ_PAGES": "0"}
