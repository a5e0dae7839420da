"""A seeded generator of the 8-category synthetic sentiment set, with a domain bias to learn.

Categories are strength x polarity: ``strong``, ``medium``, ``weak`` and ``neutral``, each
``positive`` or ``negative`` (``weak_negative``, ``neutral_positive``, ...). A neutral text states
facts only; its label is its category's polarity, so only its setting can tell the label apart.
That is the bias: ``bias`` is the share of each category's items set in its polarity's favoured
domain (positive -> ``sports``, negative -> ``work``), the rest set in the other polarity's
favoured domain. At 0.5 the domain says nothing about the label; at 0.9 (the public set's
pattern) a model that learns the setting calls neutral sports texts positive and neutral work
texts negative. ``other_share`` of the items are set in everyday life (domain ``other``) instead,
outside the bias.

Counts are allocated exactly, not drawn: each category gets its share of ``n`` (largest
remainder), and within each category round(bias x its non-other items) go to the favoured
domain, so the bias measured on the output equals the setting to within one item per category.
Texts are built from templates and word lists; the same seed gives the same rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from howsure.errors import DataError

POLARITIES = ("positive", "negative")
STRENGTHS = ("strong", "medium", "weak", "neutral")
CATEGORIES = tuple(f"{strength}_{polarity}" for polarity in POLARITIES for strength in STRENGTHS)
DOMAINS = ("sports", "work", "other")
FAVOURED_DOMAIN = {"positive": "sports", "negative": "work"}
# The public seed_cwc set's proportions: 500 strong, 1,000 medium, 2,500 weak, 1,000 neutral per polarity.
DEFAULT_WEIGHTS = {f"{s}_{p}": w for p in POLARITIES for s, w in zip(STRENGTHS, (500, 1000, 2500, 1000))}
COLUMNS = ("id", "text", "label", "category", "domain")

# --------------------------------------------------------------------------- settings: who, what, when

_SETTINGS = {
    "sports": {
        "subject": ["the home team", "our goalkeeper", "the relay squad", "the visiting side", "our captain",
                    "the junior squad", "the tennis doubles pair", "the rowing crew", "our striker",
                    "the women's basketball team", "the cycling club", "the swim team", "our point guard",
                    "the hockey defence", "the rugby forwards", "the volleyball team", "our sprinter",
                    "the boxing club", "the cricket side", "the skating pair"],
        "event": ["the league match", "the cup final", "the morning training session", "the away game",
                  "the tournament opener", "the penalty shoot-out", "the relay heats", "the season opener",
                  "the qualifying round", "the derby", "the friendly against the county side",
                  "the indoor championships", "the time trial", "the practice scrimmage", "the semi-final",
                  "the regatta", "the golf open", "the marathon"],
        "place": ["at the stadium", "on the training pitch", "at the aquatics centre", "on the clay court",
                  "at the velodrome", "in the sports hall", "at the ice rink", "on the river course",
                  "at the athletics track", "on the golf course", "in the boxing gym", "at the ballpark"],
        "object": ["the match schedule", "the team kit", "the training plan", "the fixture list",
                   "the warm-up routine", "the scoreboard", "the equipment room", "the team bus",
                   "the lineup sheet", "the locker rooms", "the referee's report", "the practice nets"],
        "outcome": ["the defence", "the passing", "the finishing", "the teamwork", "the pacing",
                    "the footwork", "the serve", "the tactical plan", "the fitness work", "the set-piece work",
                    "the substitution plan", "the final quarter"],
    },
    "work": {
        "subject": ["the project team", "our manager", "the finance department", "the new hire",
                    "the sales team", "the board", "the client account lead", "the IT department",
                    "our team lead", "the marketing group", "the product owner", "the support desk",
                    "the head of operations", "the design team", "the HR department", "the regional office",
                    "the legal team", "the night shift", "the procurement team", "our director"],
        "event": ["the quarterly review", "the client presentation", "the budget meeting",
                  "the product launch", "the weekly stand-up", "the performance review", "the system migration",
                  "the sprint planning", "the audit", "the team offsite", "the onboarding session",
                  "the sales pitch", "the project kickoff", "the year-end report", "the board meeting",
                  "the vendor negotiation", "the office move", "the deadline week"],
        "place": ["in the conference room", "at head office", "in the open-plan office", "on the video call",
                  "at the client's site", "in the boardroom", "on the third floor", "in the break room",
                  "at the regional branch", "in the training room", "at the co-working space", "on the shop floor"],
        "object": ["the meeting agenda", "the expense report", "the project timeline", "the quarterly figures",
                   "the staff rota", "the client contract", "the printer queue", "the shared drive",
                   "the org chart", "the timesheets", "the incident log", "the budget spreadsheet"],
        "outcome": ["the planning", "the communication", "the delivery", "the reporting",
                    "the hand-over", "the estimating", "the documentation", "the follow-up", "the scheduling",
                    "the code review", "the forecast", "the customer feedback"],
    },
    "other": {
        "subject": ["my neighbour", "the local bakery", "the book club", "my sister", "the bus driver",
                    "the new café", "our landlord", "the gardening group", "my cousin", "the corner shop",
                    "the choir", "the library volunteers", "the building caretaker", "my flatmate",
                    "the street market", "the dog walker", "the pharmacy", "the cinema staff",
                    "the community centre", "my grandparents"],
        "event": ["the street party", "the family dinner", "the train journey", "the school concert",
                  "the farmers' market", "the weekend trip", "the book launch", "the garden show",
                  "the birthday picnic", "the film screening", "the charity bake sale", "the museum visit",
                  "the neighbourhood clean-up", "the pottery class", "the night at the theatre",
                  "the village fair", "the cooking workshop", "the moving day"],
        "place": ["in the town square", "at the library", "in the park", "at the community hall",
                  "on the high street", "at the village green", "in the back garden", "at the station",
                  "by the river", "at the town museum", "in the local church hall", "at the market hall"],
        "object": ["the bus timetable", "the recycling bins", "the parking permits", "the library hours",
                   "the shopping list", "the notice board", "the street lights", "the opening times",
                   "the allotment rota", "the menu", "the ticket office", "the delivery slots"],
        "outcome": ["the food", "the music", "the organisation", "the service", "the atmosphere",
                    "the decoration", "the timing", "the seating", "the welcome", "the programme",
                    "the tidying up", "the signposting"],
    },
}

_TIMES = ["yesterday", "this morning", "on Saturday", "last week", "this afternoon", "on Monday evening",
          "earlier today", "last night", "over the weekend", "on Thursday", "this month", "at the end of May",
          "two days ago", "this season", "on Friday afternoon", "last spring"]

# --------------------------------------------------------------------------- how it felt, by strength x polarity

_TONE = {
    "strong_positive": {
        "adj": ["absolutely brilliant", "truly outstanding", "spectacular", "phenomenal", "magnificent",
                "simply unforgettable", "extraordinary", "flawless", "sensational", "a triumph from start to finish",
                "breathtaking", "the best I have ever seen"],
        "feel": ["I was overjoyed", "everyone was ecstatic", "I could not stop smiling", "we were all thrilled",
                 "my heart was bursting with pride", "the whole crowd was elated", "I was moved to tears of joy",
                 "it made my entire year"],
        "tail": ["and I am incredibly proud of everyone involved", "and it left us all on cloud nine",
                 "and nobody will forget it", "and every minute of it was pure joy",
                 "and it exceeded our wildest hopes", "and it was a magnificent success"],
    },
    "medium_positive": {
        "adj": ["good", "solid", "encouraging", "pleasing", "productive", "well organised", "steady",
                "better than last time", "positive", "rewarding", "enjoyable", "nicely done"],
        "feel": ["I was pleased", "we were quite happy", "I felt good about it", "the mood was upbeat",
                 "people seemed satisfied", "I came away encouraged", "it was a nice result", "we were glad"],
        "tail": ["and we are making real progress", "and the effort is paying off",
                 "and I am looking forward to the next one", "and things are clearly improving",
                 "and most people left happy", "and it was worth the work"],
    },
    "weak_positive": {
        "adj": ["slightly better than expected", "not bad", "marginally improved", "somewhat promising",
                "a little more orderly", "fairly acceptable", "mildly encouraging", "a touch smoother",
                "reasonably fine", "not entirely disappointing", "a bit more focused", "passable, perhaps better"],
        "feel": ["I suppose I was mildly pleased", "it was fine, I think", "I felt slightly hopeful",
                 "it seemed a bit better", "I was cautiously optimistic", "nobody complained much",
                 "there may have been some progress", "it was okay on the whole"],
        "tail": ["though it is hard to say for sure", "if one looks closely", "though results were mixed",
                 "though there is still a long way to go", "at least compared to before",
                 "though I would not call it a breakthrough"],
    },
    "strong_negative": {
        "adj": ["a complete disaster", "absolutely dreadful", "catastrophic", "appalling", "humiliating",
                "an utter shambles", "the worst I have ever seen", "a total failure", "disgraceful",
                "a nightmare from start to finish", "horrendous", "unbearable"],
        "feel": ["I was furious", "everyone was devastated", "I felt utterly betrayed", "we were all livid",
                 "I have never been so ashamed", "the whole room was in despair", "it made me sick to my stomach",
                 "I was completely crushed"],
        "tail": ["and it ruined everything we had worked for", "and nobody will forgive it",
                 "and it was a catastrophic waste", "and the damage will take years to repair",
                 "and every minute of it was agony", "and it destroyed what was left of our morale"],
    },
    "medium_negative": {
        "adj": ["disappointing", "frustrating", "poorly handled", "below expectations", "messy",
                "badly organised", "unconvincing", "a step backwards", "tiresome", "sloppy",
                "worse than last time", "a letdown"],
        "feel": ["I was disappointed", "we were rather frustrated", "I felt let down", "the mood was sour",
                 "people seemed annoyed", "I came away discouraged", "it was a poor result", "we were unhappy"],
        "tail": ["and we are losing ground", "and the effort is not paying off",
                 "and I am not looking forward to the next one", "and things keep slipping",
                 "and most people left unhappy", "and it was not worth the work"],
    },
    "weak_negative": {
        "adj": ["slightly underwhelming", "not quite convincing", "a bit off", "mildly concerning",
                "a little disorganised", "somewhat flat", "marginally worse", "not entirely satisfying",
                "a touch sluggish", "less focused than it could be", "a little uneven", "fine, if a bit dull"],
        "feel": ["I suppose I was mildly disappointed", "it was fine, I think, but", "I felt slightly uneasy",
                 "it seemed a bit worse", "I was cautiously doubtful", "a few people grumbled",
                 "there may have been some slippage", "it was okay, mostly"],
        "tail": ["though it is hard to say for sure", "if one looks closely", "though results were mixed",
                 "though it may just be a phase", "at least compared to what we hoped",
                 "though I would not call it a problem yet"],
    },
}

_OPINION_TEMPLATES = [
    "{time}, {subject} took part in {event} {place}, and it was {adj}, {tail}.",
    "{event} {place} {time} was {adj}; {feel}.",
    "{feel}: {outcome} in {event} {time} was {adj}.",
    "Watching {subject} {time} {place}, I thought {outcome} was {adj}, {tail}.",
    "{subject} handled {event} {time}, and honestly {outcome} was {adj}.",
    "After {event} {place} {time}, {feel}, {tail}.",
    "My verdict on {event} {time}: {adj}, {tail}.",
    "{time} {subject} showed what they can do in {event}; {outcome} was {adj} and {feel_lower}.",
]

_HEDGES = ["I suppose", "Perhaps", "It seems that", "Arguably", "In a way", "If anything", "I guess",
           "On balance", "Maybe"]

_NEUTRAL_TEMPLATES = [
    "{event} is scheduled for {time_later} {place}; {subject} will bring {object}.",
    "{subject} met {place} {time} to go over {object} for {event}.",
    "{object} for {event} was updated {time} by {subject}.",
    "{subject} attended {event} {place} {time} and filed {object}.",
    "Copies of {object} for {event} are kept {place}, {subject} said {time}.",
    "{event} took place {place} {time}, and {subject} kept {object} up to date.",
    "{subject} will receive {object} {place} before {event} {time_later}.",
    "{object} lists the arrangements for {event} {place}, {time_later}, according to {subject}.",
    "{time}, {subject} checked {object} {place} ahead of {event}.",
    "Details of {event}, set for {time_later}, were added to {object} by {subject} {time}.",
]

_LATER = ["next Tuesday", "Thursday afternoon", "the first week of June", "tomorrow morning", "next month",
          "Saturday at ten", "the 14th", "Monday at nine", "later this week", "the end of the quarter",
          "Sunday afternoon", "next spring"]


@dataclass(frozen=True)
class SeedSentimentConfig:
    """Settings of `generate_seed_sentiment`.

    n : total rows
    bias : share of each category's non-other items set in its polarity's favoured domain, [0, 1]
    seed : the same seed gives the same rows
    other_share : share of each category's items set in everyday life (domain "other"), [0, 1)
    weights : category -> relative weight (default: the public set's proportions)
    """

    n: int = 10_000
    bias: float = 0.9
    seed: int = 0
    other_share: float = 0.0
    weights: Mapping[str, float] | None = None


def _check_config(config: SeedSentimentConfig) -> dict[str, float]:
    if isinstance(config.n, bool) or not isinstance(config.n, (int, np.integer)) or config.n < 1:
        raise DataError(f"n must be a whole number of rows >= 1, got {config.n!r}")
    for name, value, high_open in (("bias", config.bias, False), ("other_share", config.other_share, True)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
        if not ok or (high_open and value >= 1.0):
            expected = "[0, 1)" if high_open else "[0, 1]"
            raise DataError(f"{name} must be a share in {expected}, got {value!r}")
    if isinstance(config.seed, bool) or not isinstance(config.seed, (int, np.integer)) or config.seed < 0:
        raise DataError(f"seed must be a whole number >= 0, got {config.seed!r}")
    weights = dict(DEFAULT_WEIGHTS if config.weights is None else config.weights)
    unknown = sorted(set(weights) - set(CATEGORIES))
    if unknown:
        raise DataError(f"unknown categories {unknown}; expected some of {list(CATEGORIES)}")
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise DataError(f"weight of category {name!r} is {weight!r}; expected a number >= 0")
    if not sum(weights.values()) > 0:
        raise DataError("category weights are all zero; expected at least one positive weight")
    return weights


def allocate(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``total`` into whole counts proportional to ``weights`` (largest remainder; ties in
    order), so the counts sum to ``total`` exactly."""
    names = list(weights)
    raw = np.array([weights[name] for name in names], dtype=np.float64)
    raw = raw / raw.sum() * total
    counts = np.floor(raw).astype(np.int64)
    remainder = raw - counts
    for index in np.argsort(-remainder, kind="stable")[: total - int(counts.sum())]:
        counts[index] += 1
    return {name: int(count) for name, count in zip(names, counts)}


def _domains_for(category: str, count: int, config: SeedSentimentConfig) -> list[str]:
    polarity = category.rsplit("_", 1)[1]
    favoured = FAVOURED_DOMAIN[polarity]
    opposite = FAVOURED_DOMAIN["negative" if polarity == "positive" else "positive"]
    n_other = int(round(config.other_share * count))
    n_favoured = int(round(config.bias * (count - n_other)))
    return [favoured] * n_favoured + [opposite] * (count - n_other - n_favoured) + ["other"] * n_other


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower_first(text: str) -> str:
    """Lower-case the first letter to continue a sentence, except the pronoun I."""
    return text if text.startswith("I ") else text[:1].lower() + text[1:]


def _text(rng: np.random.Generator, category: str, domain: str) -> str:
    def pick(options):
        return options[int(rng.integers(len(options)))]

    setting = _SETTINGS[domain]
    slots = {key: pick(values) for key, values in setting.items()}
    slots["time"] = pick(_TIMES)
    if category.startswith("neutral"):
        slots["time_later"] = pick(_LATER)
        return _capitalise(pick(_NEUTRAL_TEMPLATES).format(**slots))
    tone = _TONE[category]
    slots.update(adj=pick(tone["adj"]), feel=pick(tone["feel"]), tail=pick(tone["tail"]))
    slots["feel_lower"] = _lower_first(slots["feel"])
    sentence = pick(_OPINION_TEMPLATES).format(**slots)
    if category.startswith("weak") and rng.random() < 0.5:
        sentence = f"{pick(_HEDGES)} {_lower_first(sentence)}"
    return _capitalise(sentence)


def generate_seed_sentiment(config: SeedSentimentConfig | None = None, **settings) -> list[dict[str, str]]:
    """The rows of the synthetic set: ``id``, ``text``, ``label``, ``category``, ``domain``.

    Pass a `SeedSentimentConfig`, or its fields as keywords (``n=2000, bias=0.9, seed=1``).
    Rows are shuffled (seeded); ids are ``seed-<seed>-<row>``.

    Raises
    ------
    DataError
        n below 1, a share outside its range, an unknown category or a negative weight.
    """
    if config is None:
        config = SeedSentimentConfig(**settings)
    elif settings:
        raise DataError("pass a SeedSentimentConfig or keyword settings, not both")
    weights = _check_config(config)
    rng = np.random.default_rng(config.seed)
    plan = []
    for category, count in allocate(int(config.n), weights).items():
        plan.extend((category, domain) for domain in _domains_for(category, count, config))
    order = rng.permutation(len(plan))
    rows = []
    for row, index in enumerate(order):
        category, domain = plan[int(index)]
        rows.append({"id": f"seed-{config.seed}-{row}", "text": _text(rng, category, domain),
                     "label": category.rsplit("_", 1)[1], "category": category, "domain": domain})
    return rows


def measured_bias(rows) -> float:
    """Share of the rows outside domain ``other`` that are set in their label's favoured domain."""
    placed = [row for row in rows if row["domain"] != "other"]
    if not placed:
        raise DataError("no row is set in sports or work; the bias is undefined")
    return sum(FAVOURED_DOMAIN[row["label"]] == row["domain"] for row in placed) / len(placed)


def duplicate_share(rows) -> float:
    """Share of rows whose text already appeared in an earlier row."""
    counts = Counter(row["text"] for row in rows)
    return (len(rows) - len(counts)) / len(rows) if rows else 0.0
