"""A Hypothesis state machine against the real database.

It stores sign-ins, delivers them (again and again), crashes the worker's
transaction before it commits, sweeps the outbox, and claims with and without
Idempotency-Keys, all through the domain's own entry points. After every step
the database must agree with a plain model of the rules and with the invariants
of DESIGN.md: every sign-in applied at most once (exactly once when delivered),
completions = min(duplication, sign-ins // streak), earned = completions,
claimed <= earned, wallet = sum of claimed rewards.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)
from sqlalchemy import select

from models import Event, EventType, User, UserReward
from questline import outbox
from questline.catalog import cache
from questline.errors import DomainError
from questline.infra import db
from questline.quests import service as quests
from questline.quests.rules import apply_inputs
from questline.wallet.repository import balances
from tests import factories as f

# The model decides when each sign-in is applied, so no worker may sweep this database.
pytestmark = pytest.mark.usefixtures("no_worker")

SEED_QUEST = 1  # streak 3, duplication 2, 10 diamonds, claimed by hand
USERS = ("ann", "bob")


class Crash(Exception):
    """A worker dying after its work and before its commit."""


class QuestlineMachine(RuleBasedStateMachine):
    sign_ins = Bundle("sign_ins")

    @initialize()
    def fresh_database(self) -> None:
        with db.get_engine().begin() as conn:
            conn.execute(
                sa.text(
                    "TRUNCATE user_rewards, user_quest_progress, idempotency_keys, "
                    "refresh_tokens, events, users RESTART IDENTITY CASCADE"
                )
            )
            conn.execute(sa.text("DELETE FROM quests WHERE quest_id > 1"))
            conn.execute(sa.text("DELETE FROM rewards WHERE reward_id > 1"))
        with db.transaction() as s:
            self.user_ids = {}
            for name in USERS:
                user = User(user_name=name, password_hash="x")
                s.add(user)
                s.flush()
                self.user_ids[name] = user.user_id
            auto = f.add_quest(
                s,
                name="every-second-sign-in",
                streak=2,
                duplication=3,
                auto_claim=True,
                item="gold",
                qty=5,
            )
            self.quests = {
                SEED_QUEST: {"streak": 3, "dup": 2, "auto": False, "item": "diamond", "qty": 10},
                auto.quest_id: {"streak": 2, "dup": 3, "auto": True, "item": "gold", "qty": 5},
            }
        cache.invalidate()
        # The model: which sign-ins each user has had applied, and claims made by hand.
        self.owner: dict[int, str] = {}
        self.applied: dict[str, set[int]] = {name: set() for name in USERS}
        self.claimed: dict[str, int] = dict.fromkeys(USERS, 0)
        self.answers: dict[tuple[str, str], tuple[int, int, dict[str, Any]]] = {}

    # --- the model's arithmetic ---------------------------------------------

    def expected(self, name: str, quest_id: int) -> tuple[int, int]:
        """(curr_streak, completions) after the user's applied sign-ins."""
        q, n = self.quests[quest_id], len(self.applied[name])
        completions = min(q["dup"], n // q["streak"])
        return (n % q["streak"] if n // q["streak"] < q["dup"] else 0), completions

    def claimable(self, name: str) -> int:
        return self.expected(name, SEED_QUEST)[1] - self.claimed[name]

    def pending(self) -> list[int]:
        done = set().union(*self.applied.values())
        return [e for e in self.owner if e not in done]

    # --- steps ----------------------------------------------------------------

    @rule(target=sign_ins, name=st.sampled_from(USERS))
    def sign_in(self, name: str) -> int:
        """A login stores a sign-in event in the outbox."""
        with db.transaction() as s:
            [event_id] = f.add_sign_ins(s, self.user_ids[name])
        self.owner[event_id] = name
        return event_id

    @rule(event_id=sign_ins)
    def deliver(self, event_id: int) -> None:
        """The worker's task, for a first delivery or a duplicate one."""
        applied = outbox.process_sign_in(event_id)
        name = self.owner[event_id]
        first = event_id not in self.applied[name]
        assert applied.inputs == ([event_id] if first else [])
        self.applied[name].add(event_id)

    @rule(event_id=sign_ins, batch=st.booleans())
    def crash_before_commit(self, event_id: int, batch: bool) -> None:
        """All the work of applying, then the process dies before COMMIT: nothing sticks."""
        try:
            with db.transaction() as s:
                if batch:
                    apply_inputs(s, limit=50)
                else:
                    apply_inputs(s, event_ids=[event_id], wait=True)
                s.flush()
                raise Crash
        except Crash:
            pass

    @rule()
    def sweep(self) -> None:
        """The sweeper (or a drain wake-up) applies every pending sign-in."""
        applied = outbox.drain()
        assert sorted(applied.inputs) == sorted(self.pending())
        for event_id in applied.inputs:
            self.applied[self.owner[event_id]].add(event_id)

    @rule(name=st.sampled_from(USERS))
    def claim(self, name: str) -> None:
        expected = self.claimable(name)
        try:
            with db.transaction() as s:
                result = quests.claim(s, user_id=self.user_ids[name], quest_id=SEED_QUEST)
        except DomainError as exc:
            result = {"refused": exc.status_code}
        if expected == 0:
            assert result == {"refused": 409}
            return
        self.claimed[name] += 1
        assert result["claimable"] == expected - 1

    @rule(
        name=st.sampled_from(USERS),
        key=st.sampled_from(["k1", "k2", "k3"]),
        seed=st.booleans(),
    )
    def claim_with_key(self, name: str, key: str, seed: bool) -> None:
        """A claim under an Idempotency-Key: first answer kept, retries replay it."""
        quest_id = SEED_QUEST if seed else max(self.quests)
        expected = self.claimable(name) if quest_id == SEED_QUEST else 0
        try:
            with db.transaction() as s:
                answer = quests.claim_once(
                    s, user_id=self.user_ids[name], quest_id=quest_id, key=key
                )
            got: tuple[int, int, dict[str, Any]] = (quest_id, answer.status_code, answer.body)
        except DomainError as exc:
            got = (0, exc.status_code, {})
        first = self.answers.get((name, key))
        if got[0] == 0:  # refused: the key was first used for the other quest
            assert got[1] == 422
            assert first is not None
            assert first[0] != quest_id
            return
        if first is not None:
            assert got == first, "a retried key must replay the first answer"
            return
        self.answers[(name, key)] = got
        if expected > 0:
            assert answer.status_code == 200
            self.claimed[name] += 1
        else:
            assert answer.status_code == 409

    # --- invariants -------------------------------------------------------------

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        if not hasattr(self, "user_ids"):
            return
        with db.transaction() as s:
            processed = {
                e
                for (e,) in s.execute(
                    select(Event.event_id).where(
                        Event.type == EventType.SIGN_IN, Event.processed_at.is_not(None)
                    )
                )
            }
            assert processed == set().union(*self.applied.values())
            for name, user_id in self.user_ids.items():
                wallet = {"gold": 0, "diamond": 0}
                for quest_id, q in self.quests.items():
                    got = f.progress(s, user_id, quest_id)
                    assert got == self.expected(name, quest_id), (name, quest_id)
                    rewards = s.scalars(
                        select(UserReward).where(
                            UserReward.user_id == user_id, UserReward.quest_id == quest_id
                        )
                    ).all()
                    numbers = sorted(r.completion_no for r in rewards)
                    assert numbers == list(range(1, got[1] + 1))  # earned = completions
                    claimed = [r for r in rewards if r.status == "claimed"]
                    want = len(rewards) if q["auto"] else self.claimed[name]
                    assert len(claimed) == want <= len(rewards)
                    for r in claimed:
                        wallet[r.reward_item] += r.reward_qty
                assert balances(s, user_id) == wallet


QuestlineMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_quest_processing_matches_the_model = QuestlineMachine.TestCase
