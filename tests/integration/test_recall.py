"""Recall over constructed memory: notes, reconsolidation, as_of, hybrid and deep search."""

from typing import Any

from factories import cited, drain, ingest, make_tenant_key, message, search, unique
from sqlalchemy import text


def _notes(hits: list[dict[str, Any]]) -> list[str]:
    return [h["text"] for h in hits if h["kind"] == "note"]


def _story(
    client: Any, settings: Any, database_url: str, turns: list[tuple[str, str, str]]
) -> tuple[str, str]:
    """Ingest one message per session (id, text, ISO time), each session later than the last."""
    key, user = make_tenant_key(client), unique("user")
    for i, (mid, content, when) in enumerate(turns):
        ingest(client, key, user, f"s{i}", [message(mid, content, speaker="Jon", created_at=when)])
        drain(settings, database_url)
    return key, user


def test_a_move_supersedes_the_old_home_and_as_of_still_sees_it(client, settings, database_url, engine):
    key, user = _story(client, settings, database_url, [
        ("a1", "I live in Boston.", "2023-01-10T10:00:00+00:00"),
        ("a2", "I moved to Seattle last month.", "2023-06-01T10:00:00+00:00"),
    ])  # fmt: skip
    now = _notes(search(client, key, user, "Where does Jon live?", max_tokens=300))
    assert "Jon lives in Seattle." in now
    assert "Jon lives in Boston." not in now

    before = _notes(search(client, key, user, "Where does Jon live?", max_tokens=300,
                           as_of="2023-03-01T00:00:00+00:00"))  # fmt: skip
    assert "Jon lives in Boston." in before
    assert "Jon lives in Seattle." not in before

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT n.text, n.valid_to, s.text FROM memory_unit n"
            " LEFT JOIN memory_unit s ON s.id = n.superseded_by"
            " JOIN end_user u ON u.id = n.user_id WHERE u.external_id = :u AND n.kind = 'note'"
            " AND n.attrs->>'attribute' = 'lives_in' ORDER BY n.id"
        ), {"u": user}).all()  # fmt: skip
    # The old note is kept (history), closed when the move happened ("last month": May 2023),
    # and points at the note that replaced it.
    assert [r[0] for r in rows] == ["Jon lives in Boston.", "Jon lives in Seattle."]
    assert rows[0][1] is not None and rows[0][1].isoformat().startswith("2023-05-01")
    assert rows[0][2] == "Jon lives in Seattle."
    assert rows[1][1] is None


def test_a_new_job_and_a_corrected_name_replace_the_old_notes(client, settings, database_url):
    key, user = _story(client, settings, database_url, [
        ("b1", "I work as a teacher.", "2023-01-10T10:00:00+00:00"),
        ("b2", "My name is Jon.", "2023-01-11T10:00:00+00:00"),
        ("b3", "I got a new job as a nurse.", "2023-03-01T10:00:00+00:00"),
        ("b4", "Actually, my name is John, not Jon.", "2023-03-02T10:00:00+00:00"),
    ])  # fmt: skip
    job = _notes(search(client, key, user, "What is Jon's job?", max_tokens=400))
    assert "Jon works as a nurse." in job and "Jon works as a teacher." not in job
    name = _notes(search(client, key, user, "What is Jon's name?", max_tokens=400))
    assert any("John" in n for n in name) and not any(n.endswith("name is Jon.") for n in name)
    old = _notes(search(client, key, user, "What is Jon's job?", max_tokens=400,
                        as_of="2023-02-01T00:00:00+00:00"))  # fmt: skip
    assert "Jon works as a teacher." in old and "Jon works as a nurse." not in old


def test_a_repeated_fact_strengthens_one_note_instead_of_adding_another(
    client, settings, database_url, engine
):
    key, user = _story(client, settings, database_url, [
        ("c1", "I live in Denver.", "2023-01-10T10:00:00+00:00"),
        ("c2", "I live in Denver, by the way.", "2023-02-10T10:00:00+00:00"),
    ])  # fmt: skip
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT n.attrs->>'support', n.source_message_ids FROM memory_unit n JOIN end_user u"
            " ON u.id = n.user_id WHERE u.external_id = :u AND n.kind = 'note'"
        ), {"u": user}).all()  # fmt: skip
    assert len(rows) == 1
    assert rows[0][0] == "2" and set(rows[0][1]) == {"c1", "c2"}


def test_deep_search_answers_with_both_facts_about_the_pet(client, settings, database_url):
    """Multi-hop: the question names the pet; the trip is told about by its name."""
    key, user = make_tenant_key(client), unique("user")
    topics = ["cooking pasta", "the weather", "football scores", "tax forms", "garden tools", "movie reviews"]
    filler = [message(f"f{i}", f"I had a long chat about {t} today.", speaker="Jon")
              for i, t in enumerate(topics)]  # fmt: skip
    ingest(client, key, user, "s1", [
        message("p1", "My puppy Biscuit loves the beach.", speaker="Jon"),
        message("p2", "Biscuit came with us to Lake Tahoe in July.", speaker="Jon"),
        *filler,
    ])  # fmt: skip
    drain(settings, database_url)
    hits = search(client, key, user, "Which places has Jon's puppy been to?", mode="deep", max_tokens=200)
    assert {"p1", "p2"} <= cited(hits)


def test_feedback_moves_a_used_hit_above_one_that_was_passed_over(client, settings, database_url):
    key, user = make_tenant_key(client), unique("user")
    ingest(client, key, user, "s1", [
        message("t1", "I drink green tea every morning.", speaker="Jon"),
        message("t2", "Green tea is what I drink every morning, always.", speaker="Jon"),
    ])  # fmt: skip
    drain(settings, database_url)
    question = "Does Jon drink green tea in the morning?"
    hits = search(client, key, user, question, mode="fast")
    first, second = hits[0]["id"], next(h["id"] for h in hits[1:] if h["kind"] == hits[0]["kind"])
    for _ in range(5):
        r = client.post(f"/v1/users/{user}/feedback", json={"used": [second], "unused": [first]},
                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert r.status_code == 200 and r.json()["updated"] == 2
    again = [h["id"] for h in search(client, key, user, question, mode="fast")]
    assert again.index(second) < again.index(first)


def test_feedback_refuses_what_is_not_a_hit_id(client):
    key, user = make_tenant_key(client), unique("user")
    ingest(client, key, user, "s1", [message("x1", "hello there, I like chess", speaker="Jon")])
    r = client.post(f"/v1/users/{user}/feedback", json={"used": ["DROP TABLE"]},
                    headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert r.status_code == 422 and "hit ids" in r.json()["error"]


def test_a_time_range_keeps_only_memory_of_what_happened_in_it(client, settings, database_url):
    key, user = _story(client, settings, database_url, [
        ("r1", "I ran a marathon in Chicago.", "2023-03-10T10:00:00+00:00"),
        ("r2", "I ran a half marathon in Denver.", "2023-09-10T10:00:00+00:00"),
    ])  # fmt: skip
    everything = cited(search(client, key, user, "Which races did Jon run?", max_tokens=500))
    assert {"r1", "r2"} <= everything
    first_half = {"occurred_after": "2023-01-01T00:00:00Z", "occurred_before": "2023-06-01T00:00:00Z"}
    spring = search(client, key, user, "Which races did Jon run?", max_tokens=500, **first_half)
    assert "r1" in cited(spring) and "r2" not in cited(spring)
    r = client.post(f"/v1/users/{user}/search", headers={"Authorization": f"Bearer {key}"},
                    json={"query": "races", "occurred_after": "2023-06-01T00:00:00+00:00",
                          "occurred_before": "2023-01-01T00:00:00+00:00"})  # fmt: skip
    assert r.status_code == 422 and "occurred_after must be earlier" in r.json()["error"]


def test_relative_time_in_the_query_is_resolved_against_when_it_is_asked(client, settings, database_url):
    key, user = _story(client, settings, database_url, [
        ("h1", "I went hiking in the Alps with my sister.", "2022-07-20T10:00:00+00:00"),
        ("h2", "I went hiking in the Scottish Highlands with my sister.", "2023-07-18T10:00:00+00:00"),
        ("h3", "I went hiking in the Dolomites with my sister.", "2024-07-16T10:00:00+00:00"),
    ])  # fmt: skip
    question = "Where did Jon go hiking with his sister last summer?"

    def best(asked_at: str) -> str:
        hits = search(client, key, user, question, mode="fast", asked_at=asked_at, max_tokens=2000)
        return [h for h in hits if h["kind"] == "edu"][0]["source_message_ids"][0]

    # The same question means a different summer depending on when it is asked.
    assert best("2023-11-02T09:00:00+00:00") == "h2"
    assert best("2024-10-02T09:00:00+00:00") == "h3"
    assert best("2022-12-24T09:00:00+00:00") == "h1"
    # An explicit date needs no question date.
    hits = search(client, key, user, "Where did Jon go hiking in July 2022?", mode="fast")
    assert [h for h in hits if h["kind"] == "edu"][0]["source_message_ids"] == ["h1"]


def test_a_fact_that_holds_again_gets_a_new_current_note(client, settings, database_url):
    key, user = _story(client, settings, database_url, [
        ("r1", "I live in Boston.", "2023-01-10T10:00:00+00:00"),
        ("r2", "I live in Seattle.", "2023-06-01T10:00:00+00:00"),
        ("r3", "I live in Boston.", "2024-02-01T10:00:00+00:00"),
    ])  # fmt: skip
    now = _notes(search(client, key, user, "Where does Jon live?", max_tokens=300))
    assert "Jon lives in Boston." in now and "Jon lives in Seattle." not in now
    mid = _notes(search(client, key, user, "Where does Jon live?", max_tokens=300,
                        as_of="2023-09-01T00:00:00+00:00"))  # fmt: skip
    assert "Jon lives in Seattle." in mid and "Jon lives in Boston." not in mid
