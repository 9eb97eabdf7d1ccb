"""The review page's API on the real Postgres: sign-in and the token off loopback, CSRF, claims
that never hand one image to two reviewers, verdicts on unknown images, and a Postgres restart
in the middle of a review."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update
from sqlalchemy.engine import make_url

from jewelcut import reviews
from jewelcut.db import ReviewItem, get_engine, session_scope
from jewelcut.settings import Settings
from review.app import ReviewConfigError, create_app
from tests.faults.harness import TcpProxy, eventually
from tests.review.conftest import VERSION, decided_rows, verdicts_in_postgres

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CURRENT = re.compile(r'id="image-id">([^<]+)<')


def planned(settings: Settings, count: int) -> list[str]:
    """`count` accepted images, all in the review plan."""
    ids = decided_rows(
        settings, [(f"img-{n:03d}", "accepted", 0.99 + n * 1e-5, 0.2) for n in range(count)]
    )
    plan = reviews.plan_reviews(settings, VERSION, accepted=count, rejected_share=0)
    assert plan.total == count
    return ids


def signed_in(app: object, name: str, token: str | None = None) -> TestClient:
    client = TestClient(app)  # type: ignore[arg-type]
    csrf = CSRF.search(client.get("/login").text)
    assert csrf
    form = {"name": name, "csrf_token": csrf.group(1)} | ({"token": token} if token else {})
    response = client.post("/login", data=form, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


def page(client: TestClient) -> tuple[str | None, str]:
    """(the current image id, the page's CSRF token), or (None, "") when nothing is left."""
    response = client.get("/review", params={"model_version": VERSION})
    assert response.status_code == 200, response.text
    current, csrf = CURRENT.search(response.text), CSRF.search(response.text)
    if current is None:
        assert 'id="empty"' in response.text
        return None, ""
    assert csrf
    return current.group(1), csrf.group(1)


def post_verdict(
    client: TestClient, image_id: str, csrf: str, verdict: str = "clean", **extra: str
) -> int:
    form = {"model_version": VERSION, "image_id": image_id, "verdict": verdict}
    form |= {"csrf_token": csrf, "query": f"model_version={VERSION}"} | extra
    return client.post("/verdict", data=form, follow_redirects=False).status_code


def test_off_loopback_it_refuses_to_start_without_a_token(postgres_settings: Settings) -> None:
    with pytest.raises(ReviewConfigError, match="JEWELCUT_REVIEW_TOKEN"):
        create_app(postgres_settings, host="0.0.0.0")
    create_app(postgres_settings, host="127.0.0.1")  # loopback needs none


def test_off_loopback_every_request_needs_the_token(
    postgres_settings: Settings, tmp_path: object
) -> None:
    planned(postgres_settings, 3)
    token_file = postgres_settings.data_dir / "review-token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text("s3cret-review-token\n")
    settings = postgres_settings.model_copy(update={"review_token_file": token_file})
    app = create_app(settings, host="0.0.0.0")

    anonymous = TestClient(app)
    assert anonymous.get("/review", params={"model_version": VERSION}).status_code == 401
    assert anonymous.get(f"/image/{VERSION}/img-000/photo").status_code == 401
    csrf = CSRF.search(anonymous.get("/login").text)
    assert csrf
    wrong = {"name": "ann", "token": "guess", "csrf_token": csrf.group(1)}
    assert anonymous.post("/login", data=wrong).status_code == 401
    assert post_verdict(anonymous, "img-000", csrf.group(1)) == 401
    assert verdicts_in_postgres(settings) == {}

    client = signed_in(app, "ann", token="s3cret-review-token")
    current, _ = page(client)
    assert current is not None
    bearer = TestClient(app, headers={"Authorization": "Bearer s3cret-review-token"})
    assert bearer.get("/healthz").status_code == 200
    headers = {"X-Reviewer": "bot"}
    assert bearer.get("/review", params={"model_version": VERSION}, headers=headers).is_success


def test_a_verdict_without_the_csrf_token_is_refused(postgres_settings: Settings) -> None:
    planned(postgres_settings, 2)
    client = signed_in(create_app(postgres_settings), "ann")
    current, csrf = page(client)
    assert current is not None

    assert post_verdict(client, current, "") == 403
    assert post_verdict(client, current, "forged-token") == 403
    other = signed_in(create_app(postgres_settings), "bob")  # another session's token
    assert post_verdict(other, current, csrf) == 403
    assert verdicts_in_postgres(postgres_settings) == {}
    assert post_verdict(client, current, csrf) == 303
    assert verdicts_in_postgres(postgres_settings) == {current: ["clean"]}


def test_a_verdict_on_an_unknown_image_is_a_404_and_a_bad_one_a_422(
    postgres_settings: Settings,
) -> None:
    planned(postgres_settings, 1)
    client = signed_in(create_app(postgres_settings), "ann")
    current, csrf = page(client)
    assert current is not None

    assert post_verdict(client, "no-such-image", csrf) == 404
    assert post_verdict(client, current, csrf, verdict="meh") == 422
    assert post_verdict(client, current, csrf, verdict="flawed", flaw="ugly") == 422
    assert verdicts_in_postgres(postgres_settings) == {}
    assert post_verdict(client, current, csrf, verdict="flawed", flaw="halo") == 303
    assert reviews.verdict_of(postgres_settings, VERSION, current, "ann") == ("flawed", "halo")


def test_two_reviewers_never_get_the_same_image(postgres_settings: Settings) -> None:
    ids = planned(postgres_settings, 40)
    app = create_app(postgres_settings)
    seen: dict[str, list[str]] = {"ann": [], "bob": []}
    finished: list[str] = []
    start = threading.Barrier(2)

    def review_all(name: str) -> None:
        client = signed_in(app, name)
        start.wait()
        while True:
            current, csrf = page(client)
            if current is None:
                finished.append(name)
                return
            seen[name].append(current)
            assert post_verdict(client, current, csrf) == 303

    threads = [threading.Thread(target=review_all, args=(name,)) for name in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(finished) == ["ann", "bob"]  # both ran out of images, without an error
    assert not set(seen["ann"]) & set(seen["bob"])
    assert sorted(seen["ann"] + seen["bob"]) == sorted(ids)
    assert seen["ann"] and seen["bob"]  # both got work
    assert all(len(v) == 1 for v in verdicts_in_postgres(postgres_settings).values())


def test_concurrent_claims_are_disjoint_and_expired_claims_are_free_again(
    postgres_settings: Settings,
) -> None:
    planned(postgres_settings, 30)
    held: dict[str, list[str]] = {}
    start = threading.Barrier(6)

    def take(name: str) -> None:
        start.wait()
        held[name] = reviews.claim(postgres_settings, VERSION, name, want=5)

    threads = [threading.Thread(target=take, args=(f"r{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [image_id for ids in held.values() for image_id in ids]
    assert all(len(ids) == 5 for ids in held.values())  # no more than asked for
    assert len(everything) == len(set(everything)) == 30

    with session_scope(postgres_settings.resolved_database_url) as session:
        expired = reviews.utcnow().replace(year=2000)
        session.execute(
            update(ReviewItem).where(ReviewItem.claimed_by == "r0").values(claimed_at=expired)
        )
    assert sorted(reviews.claim(postgres_settings, VERSION, "late", want=10)) == sorted(held["r0"])


def test_nothing_is_lost_when_postgres_restarts_mid_review(
    postgres_settings: Settings, make_proxy: Callable[[str, int], TcpProxy]
) -> None:
    planned(postgres_settings, 6)
    database = make_url(postgres_settings.resolved_database_url)
    assert database.host and database.port
    proxy = make_proxy(database.host, database.port)
    through_proxy = database.set(host="127.0.0.1", port=proxy.port)
    settings = postgres_settings.model_copy(
        update={"database_url": through_proxy.render_as_string(hide_password=False)}
    )
    client = signed_in(create_app(settings), "ann")
    first, csrf = page(client)
    assert first is not None

    status: list[int] = []
    proxy.cut()  # every connection reset, new ones refused: the server is restarting
    posting = threading.Thread(target=lambda: status.append(post_verdict(client, first, csrf)))
    posting.start()
    eventually(lambda: proxy.refused >= 1, 30, "the verdict tried the database while down")
    proxy.restore()
    posting.join(timeout=90)
    assert status == [303]  # the reviewer's click went through once the database was back

    second, csrf = page(client)
    assert second is not None and second != first  # the reviewed image is not offered again
    assert post_verdict(client, second, csrf, verdict="flawed") == 303
    assert verdicts_in_postgres(postgres_settings) == {first: ["clean"], second: ["flawed"]}
    with get_engine(postgres_settings.resolved_database_url).connect() as connection:
        closed = connection.execute(
            text("SELECT count(*) FROM review_queue WHERE reviewed_at IS NOT NULL")
        ).scalar_one()
    assert closed == 2


def test_filters_hand_out_only_matching_images(postgres_settings: Settings) -> None:
    decided_rows(
        postgres_settings,
        [
            ("acc-high", "accepted", 0.999, 0.2),
            ("acc-low", "accepted", 0.985, 0.2),
            ("rej-near", "rejected", 0.97, 0.2),
        ],
    )
    reviews.plan_reviews(postgres_settings, VERSION, accepted=10, rejected_share=0.5)
    client = signed_in(create_app(postgres_settings), "ann")

    def offered(**filters: str) -> list[str]:
        params = {"model_version": VERSION} | filters
        page_text = client.get("/review", params=params).text
        return CURRENT.findall(page_text)

    assert offered(decision="rejected") == ["rej-near"]
    assert offered(decision="accepted", min_confidence="0.99") == ["acc-high"]
    assert offered(max_confidence="0.99", min_confidence="0.98") == ["acc-low"]
    assert offered(day="2001-01-01") == []  # decided today, not then
    today = reviews.utcnow().date().isoformat()
    assert offered(day=today, decision="accepted")[0] in ("acc-high", "acc-low")
    assert client.get("/review", params={"model_version": VERSION, "day": "x"}).status_code == 422


def test_the_grid_shows_held_images_and_takes_verdicts(postgres_settings: Settings) -> None:
    ids = planned(postgres_settings, 15)
    client = signed_in(create_app(postgres_settings), "ann")
    grid = client.get("/grid", params={"model_version": VERSION})
    assert grid.status_code == 200
    shown = re.findall(r'image=([^"&]+)"', grid.text)
    assert len(shown) == 12 and set(shown) <= set(ids)
    csrf = CSRF.search(grid.text)
    assert csrf
    response = client.post(
        "/verdict",
        data={
            "model_version": VERSION,
            "image_id": shown[0],
            "verdict": "flawed",
            "flaw": "missed_part",
            "csrf_token": csrf.group(1),
            "query": f"model_version={VERSION}",
            "view": "grid",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"].startswith("/grid?")
    assert reviews.verdict_of(postgres_settings, VERSION, shown[0], "ann") == (
        "flawed",
        "missed_part",
    )
    again = re.findall(r'image=([^"&]+)"', client.get(response.headers["location"]).text)
    assert shown[0] not in again and len(again) == 12  # topped up from the queue
