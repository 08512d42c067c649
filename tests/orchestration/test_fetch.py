"""fetch_url's page reader: loopback refused in every spelling against a live local server,
private/link-local/metadata addresses refused without ever connecting (an injected
resolver and a transport that fails the test if called), redirects vetted on every hop."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from orchestration.fetch import FetchRefused, PageFetcher

ARTICLE = ("<html><head><title>Rank fusion notes</title></head><body><nav>Home | About</nav><article>"
           "<h1>Rank fusion notes</h1>" + "<p>Reciprocal rank fusion adds one over sixty plus the rank for every "
           "list that found a document, which rewards agreement between sources.</p>" * 6 +
           "</article><footer>Copyright</footer></body></html>")


class Site(ThreadingHTTPServer):
    """A live loopback server: /article, /redirect?to=URL, /image, /big; records paths."""

    daemon_threads = True

    def __init__(self):
        self.paths: list[str] = []
        self.hosts: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                site.paths.append(self.path)
                site.hosts.append(self.headers.get("Host", ""))
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("to=", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ctype, body = {"/image": ("image/png", b"\x89PNG...."),
                               "/big": ("text/plain", b"word " * 100_000)}.get(
                    self.path, ("text/html; charset=utf-8", ARTICLE.encode()))
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]


@pytest.fixture
def site():
    server = Site()
    yield server
    server.shutdown()
    server.server_close()


class NeverConnect(httpx.AsyncBaseTransport):
    """Fails the test if the fetcher ever tries to connect."""

    async def handle_async_request(self, request):
        pytest.fail(f"connected to {request.url}")


class ToSite(httpx.AsyncBaseTransport):
    """Plays the public internet: whatever public address the fetcher pinned, the bytes go
    to the local site, and what was asked for is recorded."""

    def __init__(self, site: Site):
        self.site, self.seen, self.inner = site, [], httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request):
        self.seen.append((str(request.url), request.headers["Host"]))
        request.url = request.url.copy_with(host="127.0.0.1", port=self.site.port)
        return await self.inner.handle_async_request(request)


def public(host, port):
    return {"public.example.org": ["93.184.216.34"], "other.example.org": ["2606:2800:220:1::1"]}.get(host, ["10.9.9.9"])


def fetch(fetcher, url):
    return asyncio.run(fetcher.fetch(url))


@pytest.mark.parametrize("spelling", ["127.0.0.1", "127.1", "0x7f000001", "2130706433", "[::1]", "localhost"])
def test_loopback_is_refused_in_every_spelling_against_a_live_server(site, spelling):
    with pytest.raises(FetchRefused, match="non-public"):
        fetch(PageFetcher(), f"http://{spelling}:{site.port}/article")
    assert site.paths == []


@pytest.mark.parametrize("address", ["10.1.2.3", "172.16.5.4", "172.31.255.1", "192.168.1.1", "169.254.169.254",
                                     "fc00::1", "fd12:3456::1", "fe80::1", "0.0.0.0", "::ffff:192.168.0.1",
                                     "100.100.100.200", "100.64.0.1"])
def test_private_link_local_and_metadata_addresses_are_refused_without_connecting(address):
    asked = []

    def resolver(host, port):
        asked.append(host)
        return [address]

    fetcher = PageFetcher(resolver=resolver, transport=NeverConnect())
    with pytest.raises(FetchRefused, match="non-public"):
        fetch(fetcher, "https://innocent.example.org/page")
    assert asked == ["innocent.example.org"]


def test_a_public_name_is_fetched_pinned_to_its_vetted_address_and_its_main_text_extracted(site):
    transport = ToSite(site)
    page = fetch(PageFetcher(resolver=public, transport=transport), "http://public.example.org/article")
    assert page.title == "Rank fusion notes" and "rewards agreement between sources" in page.text
    assert "Copyright" not in page.text and "Home | About" not in page.text
    assert transport.seen == [("http://93.184.216.34/article", "public.example.org")]
    assert site.hosts == ["public.example.org"]


def test_a_redirect_to_loopback_or_a_private_name_is_refused_before_following_it(site):
    transport = ToSite(site)
    fetcher = PageFetcher(resolver=public, transport=transport)
    with pytest.raises(FetchRefused, match="127.0.0.1"):
        fetch(fetcher, f"http://public.example.org/redirect?to=http://127.0.0.1:{site.port}/secret")
    with pytest.raises(FetchRefused, match="10.9.9.9"):
        fetch(fetcher, "http://public.example.org/redirect?to=http://intranet.example.org/secret")
    assert [p.split("?")[0] for p in site.paths] == ["/redirect", "/redirect"]  # never /secret
    page = fetch(fetcher, "http://public.example.org/redirect?to=http://other.example.org/article")
    assert page.redirects == ["http://other.example.org/article"] and "rank" in page.text
    assert transport.seen[-1] == ("http://[2606:2800:220:1::1]/article", "other.example.org")


def test_only_text_like_content_is_read_and_size_is_capped(site):
    fetcher = PageFetcher(resolver=public, transport=ToSite(site), max_bytes=10_000)
    with pytest.raises(FetchRefused, match="image/png"):
        fetch(fetcher, "http://public.example.org/image")
    page = fetch(fetcher, "http://public.example.org/big")
    assert page.truncated and len(page.text) <= 10_000


def test_other_schemes_are_refused():
    with pytest.raises(FetchRefused, match="http"):
        fetch(PageFetcher(transport=NeverConnect()), "file:///etc/passwd")


def test_fetch_allow_private_lets_loopback_through(site):
    page = fetch(PageFetcher(allow_private=True), f"http://127.0.0.1:{site.port}/article")
    assert "rewards agreement" in page.text
