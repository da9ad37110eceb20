"""Who may use the web API: Host and Origin checks and the page token on every POST (CSRF,
DNS rebinding) even on loopback, and the bearer token a non-loopback bind requires."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from tests.web.conftest import WebDaemon, command, env, page_token, post

TOKEN = "correct-horse-battery-staple-42"


def test_cross_origin_post_is_refused(web_daemon: WebDaemon) -> None:
    """A POST whose Origin is another site is refused, even with a valid page token, and
    nothing happens (the message stays queued, no flush starts)."""
    (entry,) = web_daemon.submit(1)
    with web_daemon.client() as client:
        for path in ("/api/flush", f"/api/queue/{entry}/cancel"):
            answer = post(client, path, Origin="http://evil.example")
            assert answer.status_code == 403, path
            assert "evil.example" in answer.json()["message"]
        cross_site = post(client, "/api/flush", **{"Sec-Fetch-Site": "cross-site"})
        assert cross_site.status_code == 403
        assert client.get("/api/flushes").json() == []
        assert [e["state"] for e in client.get("/api/queue").json()] == ["queued"]


def test_foreign_host_is_refused(web_daemon: WebDaemon) -> None:
    """A request naming another Host (a DNS-rebinding page) is refused, GET and POST."""
    with web_daemon.client() as client:
        token = page_token(client)
        foreign = {"Host": f"rebind.example:{web_daemon.port}", "X-Mapispool-Token": token}
        assert client.post("/api/flush", json={}, headers=foreign).status_code == 403
        assert client.get("/api/status", headers=foreign).status_code == 403
        assert client.get("/", headers=foreign).status_code == 403
        local = {"Host": f"localhost:{web_daemon.port}"}
        assert client.get("/api/status", headers=local).status_code == 200
        assert client.get("/api/flushes").json() == []


def test_post_without_a_page_token_is_refused(web_daemon: WebDaemon) -> None:
    """Same Host, same Origin, but no page token or a forged one: refused."""
    with web_daemon.client() as client:
        origin = {"Origin": web_daemon.base_url}
        assert client.post("/api/flush", json={}, headers=origin).status_code == 403
        forged = {**origin, "X-Mapispool-Token": "abc.0123456789abcdef0123456789abcdef"}
        assert client.post("/api/flush", json={}, headers=forged).status_code == 403
        assert post(client, "/api/flush").status_code == 202


def test_the_page_carries_its_token_and_no_secret(
    web_daemon_factory: Callable[..., WebDaemon],
) -> None:
    """The page embeds a page token that POSTs accept; the bearer token is not in it."""
    daemon = web_daemon_factory('token_env = "WEB_TOKEN"\n', {"WEB_TOKEN": TOKEN})
    with daemon.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        html = client.get("/").text
        assert TOKEN not in html
        token = html.split('name="mapispool-token" content="')[1].split('"')[0]
        headers = {"Origin": daemon.base_url, "X-Mapispool-Token": token}
        assert client.post("/api/flush", json={}, headers=headers).status_code == 202
        for path in ("/api/status", "/api/queue", "/api/flushes", "/metrics"):
            assert TOKEN not in client.get(path).text, path


def test_token_is_required_when_configured(web_daemon_factory: Callable[..., WebDaemon]) -> None:
    """With [web] token_env every request needs the bearer token (or the cookie the sign-in
    form sets); a browser without it is sent to the sign-in form."""
    daemon = web_daemon_factory('token_env = "WEB_TOKEN"\n', {"WEB_TOKEN": TOKEN})
    with daemon.client() as client:
        for path in ("/api/status", "/api/events", "/metrics", "/api/token"):
            answer = client.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/").headers["location"] == "/login"
        wrong = client.get("/api/status", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200
        form = {"Origin": daemon.base_url, "Content-Type": "application/x-www-form-urlencoded"}
        assert client.post("/login", content="token=wrong", headers=form).status_code == 401
        signed = client.post("/login", content=f"token={TOKEN}", headers=form)
        assert signed.status_code == 303
        assert TOKEN not in signed.headers["set-cookie"]
        assert client.get("/api/status").status_code == 200  # the cookie now


def test_non_loopback_bind_without_token_is_refused(web_daemon: WebDaemon) -> None:
    """serve --web on an address that is not loopback, without [web] token_env, stops
    before binding with a one-line error naming the fix."""
    done = subprocess.run(
        command(web_daemon.profile, "serve", "--web", "0.0.0.0:1"),
        capture_output=True,
        text=True,
        env=env(),
        timeout=60,
    )
    assert done.returncode != 0
    assert "token_env" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_other_site_may_frame_the_page(web_daemon: WebDaemon) -> None:
    """The page forbids framing (clickjacking of its buttons) and foreign scripts."""
    with web_daemon.client() as client:
        headers = client.get("/").headers
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "default-src 'self'" in headers["content-security-policy"]
