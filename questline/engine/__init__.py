"""The quest engine: one pure evaluator for every quest and every event (sign-ins included).

Definitions + a user's quest states + one event -> new states + effects. No I/O, no clock,
no database: time comes from the event (`occurred_at`, its stamped zone) or, for views,
from a `now` argument. The shells around it (the worker drain, `recompute`, the player
views) load states, call it, and write what it returns.

    quest = parse_quest({"quest_id": 1, "target": 3, "duplication": 2, "rewards": [...]})
    outcome = evaluate([quest], states, EventIn(event_id=..., user_id=..., type="sign_in",
                                                 occurred_at=..., tz="UTC"))

Choices the contract (API.md v2) leaves open, made as a quest designer would expect:
- Conditions: booleans, numbers and strings never equal each other (True != 1, "1" != 1),
  but numbers compare by value (1 == 1.0). Several operators on one attribute all hold
  ({"gte": 10, "lte": 20} is a range). `in` takes 1-100 values; `where` at most 16 attributes.
- Definitions: unknown keys (name, active, reward_id ...) are ignored; `target` is a whole
  number; the bundle comes from `rewards` [{item, qty}] or a `reward` object (`items`, or
  v1's reward_item/reward_qty); `grace_periods` > 0 is refused unless the measure is
  consecutive; `max_per_period` is accepted but unused for consecutive quests; a trigger
  on a history type (quest_*, reward_*) is refused; `requires` naming the quest itself is
  a cycle; `timezone` must be "user", "UTC" or a name in the IANA database.
- A sum event of value 0 changes nothing and records nothing (no quest_progress).
- QuestProgressed carries `progress` (after completions) and `reached` (before them), so the
  shell can write v1's quest_progress history (curr_streak 3 on the completing sign-in).
- One event may complete one quest at most MAX_COMPLETIONS_PER_EVENT (1000) times; beyond
  that it raises EvaluationError (a definition mistake, dead-lettered by the shell) rather
  than grant a flood of rewards.
- Consecutive quests store qualifying period indexes (`streak_periods`) and no per-period
  progress; completions earned by joining a late period are attributed to that period.
  `streak_completions` counts what streaks earned before the duplication cap, so a shell
  may prune old indexes without losing count.
- Views: `best_streak` is 0 for count/sum; `curr_streak` and `progress` are Decimals;
  `completions_this_period` is lifetime completions for period "none", and for consecutive
  quests 1 when the current period completed a multiple of target in its run, else 0.
- Status precedence: claimable, completed, ended, locked, upcoming, done_for_period,
  not_started, in_progress. A consecutive quest whose current period already qualifies is
  done_for_period; it is in_progress while its latest run can grow, else not_started.
  Count/sum quests are not_started when this period has no progress and no completion
  (for period "none" that is v1's rule: curr_streak 0 and no completion).
"""

from questline.engine.definitions import (
    AttrValue,
    Condition,
    Measure,
    Operator,
    PeriodKind,
    QuestDef,
    RewardItem,
    Trigger,
    Weekday,
)
from questline.engine.effects import (
    Effect,
    Outcome,
    QuestCompleted,
    QuestProgressed,
    RewardEarned,
)
from questline.engine.evaluate import (
    MAX_COMPLETIONS_PER_EVENT,
    counts_for,
    evaluate,
    fold,
    requirements_met,
)
from questline.engine.events import EvaluationError, EventIn, sign_in
from questline.engine.periods import Period, period_of, quest_period, reset_instant, zone
from questline.engine.state import PeriodState, QuestState
from questline.engine.validation import check_requires, parse_quest, parse_rewards
from questline.engine.views import QuestProgressView, QuestStatus, quest_status, quest_view
from questline.errors import QuestInvalid

__all__ = [
    "MAX_COMPLETIONS_PER_EVENT",
    "AttrValue",
    "Condition",
    "Effect",
    "EvaluationError",
    "EventIn",
    "Measure",
    "Operator",
    "Outcome",
    "Period",
    "PeriodKind",
    "PeriodState",
    "QuestCompleted",
    "QuestDef",
    "QuestInvalid",
    "QuestProgressView",
    "QuestProgressed",
    "QuestState",
    "QuestStatus",
    "RewardEarned",
    "RewardItem",
    "Trigger",
    "Weekday",
    "check_requires",
    "counts_for",
    "evaluate",
    "fold",
    "parse_quest",
    "parse_rewards",
    "period_of",
    "quest_period",
    "quest_status",
    "quest_view",
    "requirements_met",
    "reset_instant",
    "sign_in",
    "zone",
]
