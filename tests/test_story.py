"""The product's story over real HTTP with a real worker: sign up, sign in three
times, claim 10 diamonds, do it once more, and no further."""

from __future__ import annotations

from typing import Any


def test_sign_in_three_times_can_be_earned_twice_and_no_more(make_player: Any, worker: Any) -> None:
    alice = make_player("alice")
    assert alice.get("/auth/me").json()["status"] == "not_new"  # the first login

    for round_no in (1, 2):
        signs = [alice.login() if i else alice.refresh() for i in range(3 if round_no > 1 else 2)]
        if round_no == 1:
            signs.insert(0, {"sign_in_id": 1})  # the login that made the token
        for s in signs:
            alice.wait_processed(s["sign_in_id"])
        quest = alice.quest()
        assert quest["completions"] == round_no
        assert quest["claimable"] == 1
        assert quest["status"] == "claimable"
        r = alice.post("/me/quests/1/claim")
        assert r.status_code == 200, r.text
        assert r.json()["balance"] == {"gold": 0, "diamond": 10 * round_no}
        assert r.json()["claimable"] == 0

    assert alice.quest()["status"] == "completed"
    for _ in range(3):
        alice.wait_processed(alice.login()["sign_in_id"])
    quest = alice.quest()
    assert (quest["completions"], quest["claimed"], quest["claimable"]) == (2, 2, 0)
    assert alice.post("/me/quests/1/claim").status_code == 409
    assert alice.get("/auth/me").json()["diamond"] == 20
    # v1's diamond is read from the wallet, which holds what the two claims paid.
    assert alice.get("/me/wallet").json() == {"balances": {"gold": 0, "diamond": 20}}
    assert alice.get("/auth/me").json()["wallet"] == {"gold": 0, "diamond": 20}
