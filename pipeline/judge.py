"""The rule-based judge of ``eval_classes``: what did a reply *do*?

Each reply (its text channel) gets one **behaviour**:

- ``ack``       acknowledges a tool action ("Sure, checking the weather in Lima.")
- ``refusal``   declines because the tool is unavailable ("I can't check traffic from here.")
- ``narration`` speaks a tool result. On a tool_result_speak row: states every
                injected fact value (``pipeline.narration``). On any other row:
                claims a result the model cannot have (a fabricated answer).
- ``direct``    a well-formed reply with none of the cues above (ordinary chat)
- ``other``     empty, not well-formed text, or an unfaithful/partial narration

and the row is **correct** when the behaviour is the one its class expects
(tool_match -> ack, tool_miss -> refusal, non_tool -> direct,
tool_result_speak -> narration); a tool_match ack that names the action of a
*different* catalog tool is an ack but not correct.

The cues (lexicons and patterns) are listed in ``docs/evaluation.md``. Ack
cues include the action phrases of every tool in ``pipeline.catalog``
("checking the weather in", "setting an alarm for", ...); refusal and ack cues
cover every template of ``pipeline.templates`` (held-out side included) and
are tested against all of them. Replies are read clause by clause (split at
sentence punctuation, commas and dashes): a clause whose subject is a gerund
phrase ("Setting small goals is ...") holds no ack, and a result word after an
ack in its own clause is what the ack is about, not a claim. Decision order:

1. no letters at all -> other ("empty")
2. tool_result_speak: all fact values stated -> narration
3. the earliest of the refusal / ack / result cues decides:
   refusal first -> refusal
4. a result cue anywhere -> narration (non-tsr rows) / other (tsr rows: the
   facts were not all stated)
5. an ack cue -> ack
6. tool_result_speak stating some fact values -> other ("partial narration")
7. well-formed text -> direct, else other

How well this works is measured, not assumed: :func:`measure` runs the judge
on the hand-labelled replies of ``JUDGE_CASES`` (phrasing families: refusal and
ack styles, chat that sounds like an ack, numbers, money, times, dates and
units in words and digits, British and American spellings) and the card
prints the result.
"""
from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pipeline.artifacts import JUDGE_CASES_JSONL
from pipeline.catalog import TOOLS
from pipeline.narration import TrainingValues, score_narration, stated_values
from pipeline.params import StageError
from pipeline.records import CLASSES
from pipeline.text_norm import fold

BEHAVIOURS = ("ack", "refusal", "direct", "narration", "other")
EXPECTED = {"tool_match": "ack", "tool_miss": "refusal", "non_tool": "direct", "tool_result_speak": "narration"}
assert set(EXPECTED) == set(CLASSES)


def cue_text(text: str) -> str:
    """Lowercase, accents folded, apostrophes dropped (can't -> cant), punctuation -> spaces."""
    text = fold(text).replace("'", "")
    text = re.sub(r"[^\w\s:.%$°/-]", " ", text)
    text = re.sub(r"(?<!\d)[.:](?!\d)", " ", text)
    return " ".join(text.split())


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b")


_CLAUSE_BREAK = re.compile(r"[.!?;:,…]+(?=\s|$)|\s[-–—]+\s|[—–]")


def cue_clauses(text: str) -> tuple[str, ...]:
    """The cue text of each clause (split at sentence punctuation, commas and dashes), empty ones dropped."""
    return tuple(clause for clause in (cue_text(part) for part in _CLAUSE_BREAK.split(text)) if clause)


# --------------------------------------------------------------------------- refusal cues

# What an assistant cannot do as a person, not as a tool user: "I can't taste food, but ..." is chat.
_SELF_LIMITS = r"(?! to)?(?: to)?(?: really)? (?:listen|taste|smell|eat|drink|sleep|dream|feel|dance|sing|travel|touch|breathe|hug)\b"
_TOOL_NOUN = r"(?:tool|tools|toolset|toolkit|toolbox|integration|plugin|service)"

# A decline on its own: the reply says the capability is missing.
REFUSAL_STRONG = _rx(
    rf"(?:im|i am|we are|were) (?:unable|not able|not set up|not equipped|not in a position)(?!{_SELF_LIMITS})",
    r"(?:i|we) (?:dont|do not) have (?:access|a way|any way|the ability|the means|that tool|a tool|the tool|the right tool|a tool for|permission)",
    # negated possession, American and British: "I've no way", "I haven't got a tool", "I've not got access"
    r"(?:i|we|ive|weve)(?: have| got)? no (?:way|tool|tools|access|means|ability)",
    r"(?:i|we) (?:havent|have not)(?: got)?(?: a| an| any| the)? (?:way|tool|tools|access|means|ability)",
    r"(?:ive|weve|i have|we have) not got(?: a| an| any| the)? (?:way|tool|tools|access|means)",
    r"(?:i|we) (?:wasnt|werent|was not|were not|havent been|have not been) given(?: a| an| any| the)? (?:way|tool|tools|access|means|ability|permission)",
    rf"(?:i|we) (?:dont|do not|havent|have not)(?: have| got)? (?:a|an|any|the|that|this)(?: \w+){{0,3}} {_TOOL_NOUN}",
    # a missing tool named: "there's no traffic tool", "none of my tools", "I'd need a rideshare tool"
    r"no (?:tool|tools) (?:here|available|that)",
    rf"(?:theres|there is|there are|ive got|i have|with) no(?: \w+){{0,2}} {_TOOL_NOUN}",
    rf"none of (?:the|my) {_TOOL_NOUN}",
    rf"(?:id|would|request|that|it) (?:need|needs|require|requires|take|takes) (?:a|an)(?: \w+){{0,2}} (?:tool|integration|plugin)",
    rf"(?:my|the|these) {_TOOL_NOUN}(?: \w+){{0,8}} (?:but not|dont|do not|doesnt|does not|cant|cannot)",
    rf"not (?:in|on|part of) my (?:{_TOOL_NOUN}|list|skill set|skillset)",
    # declining in so many words
    r"(?:have to|must|need to|got to|gotta) (?:politely |respectfully |kindly )?(?:decline|pass on)",
    r"pass on (?:that|this) (?:one|request)",
    r"(?:i|we) (?:politely |respectfully )?decline",
    r"no can do",
    # the capability is out of reach
    r"(?:not|isnt|arent) something (?:i|im|ive|my tools|we)",
    r"beyond (?:what (?:i|im|ive|we)|me|my (?:abilities|capabilities|reach|tools))",
    r"(?:out of|not within|isnt within|is not within|arent within) (?:my )?(?:reach|abilities|capabilities)",
    r"nothing (?:here|i have|i can use|available|in my \w+) (?:that|which) (?:can|could|lets|does)",
    rf"(?:the )?only {_TOOL_NOUN} (?:i|ive|we|weve|available)",
    r"off the table",
    r"outside (?:my (?:reach|abilities|capabilities|tools|toolset|toolkit)|what (?:i|ive|im)|the tools)",
    r"(?:not|isnt|is not) possible",
    r"i wish i could",
    r"id love to but",
    r"(?:isnt|is not|arent|are not|not) (?:among|one of|part of) (?:my|the tools|the things (?:i|im)|what (?:i|im))",
    r"nothing in my (?:toolset|tools)",
    r"(?:tool|tools|toolset|capability) (?:isnt|is not|arent|are not|not) (?:available|enabled|connected|listed|set up|on my list|supported)",
    r"(?:that|this|the|such a) (?:tool|capability|feature) (?:isnt|is not|wasnt)",
    r"tool (?:that|which) (?:isnt|is not|arent|are not)",
    r"(?:not|isnt|arent)(?: \w+){0,2} (?:available|connected|enabled) to me",
    r"(?:im|i am|were|we are) not (?:connected|hooked up|linked|integrated) (?:to|with)",
    r"(?:isnt|is not|arent|are not|not) (?:hooked up|connected|linked|wired up|integrated)(?: to| with)? (?:me|anything i|my)",
)
# A negated ability ("I can't ...") is a decline only with support: an apology,
# a hedge, a word about tools/availability, or where/when ("here", "right now").
NEGATED_ABILITY = _rx(
    rf"(?:i|we) (?:cant|cannot|can not|couldnt|wont be able to|shant be able to|will not be able to|am not able to)"
    rf"(?! wait| believe| stop)(?!{_SELF_LIMITS})"
)
REFUSAL_SUPPORT = _rx(
    r"sorry", r"apolog\w*", r"unfortunately", r"regrettably", r"afraid", r"tool", r"tools", r"toolset",
    r"capability", r"available", r"access", r"connected", r"enabled", r"listed", r"set up", r"here",
    r"right now", r"at the moment", r"in this (?:session|conversation|chat)", r"currently",
)

# --------------------------------------------------------------------------- ack cues

_TOOL_VERBS = (
    r"check|look|find|get|set|start|send|turn|pull|play|book|grab|put|adjust|dim|switch|open|read|fetch|search|"
    r"call|text|message|navigate|schedule|add|create|cancel|request|order|remind|queue|brighten|light|change|"
    r"ring|pop|jot|note|sort (?:that|it|this|out)|take a look|have a look|work out|figure out|make a note|"
    r"fire off|shoot off|"
    r"see (?:how|if|whether|what|whats|when|where)|bring up|fire up|"
    r"do that|handle that|take care of (?:that|it)|see what"
)
_PROGRESSIVE = (
    r"checking|setting|finding|starting|sending|requesting|adjusting|dimming|brightening|booking|fetching|"
    r"searching|navigating|texting|messaging|emailing|scheduling|ordering|queuing|calling up|pulling up|looking up|"
    r"looking into|looking at|having a look|turning|switching|putting (?:on|in|a|an|the|your|some|it|that)|getting (?:you|your|the)|playing|pulling|"
    r"firing off|shooting off|"
    r"grabbing|bumping|adding|popping|ringing|sorting|lowering|raising|cranking|noting|jotting|loading|"
    r"firing up|bringing up|working out|figuring out|opening|reading|creating|cancel+ing|changing|dialing|dialling"
)
# someone else's action, or a gerund used as a noun, is not an ack: "you're getting better",
# "it's turning cold", "a kind way of putting things", "thanks for checking in"
# (whole words only; "were" is left out: cue text cannot tell it from "we're checking", an ack)
_NOT_MINE = "".join(rf"(?<!\b{w} )" for w in (
    "youre", "you are", "theyre", "they are", "its", "it is", "is", "was", "keep", "of", "for", "by", "about",
    "without", "from", "like", "enjoy", "love", "stop", "try", "mind"))
# Asking for a moment: an ack when a tool call follows, thinking time when the reply then answers by itself.
WAIT_PHRASES = (
    r"one (?:moment|sec|second)", r"just a (?:moment|sec|second|tick|minute)", r"half a (?:sec|tick|second)",
    r"give me (?:a|one|a few|two|a couple of|a couple) (?:seconds?|moments?|secs?|minutes?|ticks?)",
    r"hang tight", r"hang on(?! to)", r"hold on(?! to)", r"bear with me",
)
WAIT_ONLY = re.compile(r"^(?:(?:ok|okay|sure|right|alright|yes|yeah|hmm|um|so) )*(?:" + "|".join(WAIT_PHRASES) + r")$")
ACK_GENERIC = _rx(
    rf"(?:let me|lemme|ill|i will|im going to|i am going to)(?: just| quickly| go ahead and| now| also| first)? (?:{_TOOL_VERBS})",
    rf"{_NOT_MINE}(?:{_PROGRESSIVE})",
    # "On it!" opens a clause or follows "I'm"; "looking back on it" is no ack
    r"(?<!\w )on it", r"(?:im|i am) on it", *WAIT_PHRASES,
    r"right away", r"coming right up", r"as we speak", r"leave it with me",
)
# Thinking aloud: a tool verb whose object is the assistant's own mind, words or viewpoint ("let me check my
# memory", "checking the maths", "let me look at it another way") is no tool call. What may follow the verb
# (up to two words), then one of these.
THINKING_ALOUD_OBJECTS = (
    r"(?:my|the) (?:memory|head|mind|thoughts|brain)", r"the maths?", r"it out", r"the right words",
    r"(?:at )?(?:it|this|that) (?:another|a different|a new) way", r"back at what you said", r"on the bright side",
    r"in to say", r"devils advocate", r"aside", r"while i think", r"my (?:answer|reasoning|wording)",
    r"(?:myself|yourself)", r"the (?:optimist|pessimist|realist)", r"the right (?:words|answer)",
    r"(?:this|it|that|things) together", r"an? (?:\w+ )?way to (?:say|put|explain) (?:it|this|that)",
    r"(?:of|for) reflection", r"an? (?:old|personal) favourite", r"i (?:understood|heard|got) (?:you|that|this|it)",
    r"to (?:appreciate|think|enjoy|take in|process|reflect)",
)
_THINKING_ALOUD = re.compile(r"^(?: [\w']+){0,2}? (?:" + "|".join(THINKING_ALOUD_OBJECTS) + r")\b")
# Conversational idioms built on tool verbs: "let me put it simply", "I'll look forward to it".
DISCOURSE_IDIOMS = _rx(
    r"(?:let me|lemme|ill|i will|im going to) (?:look forward|start (?:off )?by|put it (?:simply|another way|this way|like this)|"
    r"get this straight|turn (?:the|that|this) question|check in (?:on|with) you|set the record straight|add that)",
)
# A clause whose subject is a gerund phrase is a statement, not an ack:
# "Setting small goals is a great way ...", "Sending texts isn't something I can do."
_SUBORDINATORS = r"if|whether|what|whats|how|hows|when|where|wheres|who|that|which|so|because|while|until|as"
_FINITE_VERBS = (
    r"is|isnt|are|arent|was|wasnt|were|can|cant|cannot|could|couldnt|will|wont|would|wouldnt|should|may|might|"
    r"must|takes|took|makes|made|helps|saves|gives|keeps|feels|sounds|seems|means|matters|costs|becomes|does|"
    r"doesnt|tends|brings|requires|needs|lets|beats|has|hasnt|goes|gets"
)
GERUND_SUBJECT = re.compile(rf"^\w+ing\b(?: (?!(?:{_SUBORDINATORS})\b)[\w:.-]+){{0,10}}? (?:{_FINITE_VERBS})\b")


def _action_prefixes() -> list[tuple[str, str]]:
    """(cue text of the literal start of a catalog tool's action phrase, tool name), longest first."""
    out = []
    for spec in TOOLS:
        literal = next(iter(string.Formatter().parse(spec.action)))[0] or ""
        prefix = cue_text(literal)
        if len(prefix.split()) >= 2:
            out.append((prefix, spec.name))
    return sorted(out, key=lambda item: -len(item[0]))


ACTION_PREFIXES = _action_prefixes()
_ACTION_RX = [(re.compile(r"\b" + re.escape(prefix) + r"\b"), name) for prefix, name in ACTION_PREFIXES]

# --------------------------------------------------------------------------- result cues (a claimed tool result)

# A claim on its own: phrases of the catalog's narration templates and generic result talk.
RESULT_CLAIMS = _rx(
    r"now playing", r"youre listening to", r"(?:is|are) on part of",
    r"ive (?:set|started|sent|booked|added|turned|scheduled|created|adjusted|dimmed|put|switched|found|checked)",
    r"i sent", r"(?:is|are|has been|have been) (?:now )?(?:set for|set to|booked|delivered|scheduled)",
    r"(?:are|is) now at", r"is lit", r"lights are (?:now )?on", r"alarm is set", r"youll be woken",
    r"timer (?:started|is set|is running)", r"will go off", r"(?:it|that) ends at", r"itll ring",
    r"reminder saved", r"youll get a nudge", r"ill tell you to", r"emailed you", r"theres an? (?:email|message)",
    r"(?:latest|newest|most recent) (?:email|message) from \w+ (?:is|arrived|came|was)", r"arrived at", r"came in at",
    r"received at", r"got your text", r"best route", r"adding about", r"extra minutes", r"minute delay", r"delay of",
    r"(?:top|big|leading|main|latest) \w+ (?:story|headline)", r"\w+ story right now", r"in \w+ news", r"calendar shows",
    r"trading at", r"shares of", r"driver (?:arrives|will be)", r"pickup in", r"degrees (?:inside|indoors)",
    r"the weather in \w+ (?:is|it)",
)
# Result words that chat uses too ("You have a great sense of humour", "Currently, the tallest
# building ..."): a claim only when the clause also states a value (a number, a time or a day).
RESULT_WORDS = _rx(
    r"currently", r"all set", r"is running", r"delivered", r"is via", r"via", r"heads up", r"headline", r"story is",
    r"you have (?:your|a|an|the|one)", r"youve got (?:the|a|an)", r"scheduled for", r"sits at", r"booked", r"fare",
    r"costs? (?:about|around)", r"heading to", r"right now in", r"right now its",
)
_VALUE = _rx(
    r"\d+", r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|hundred",
    r"noon|midnight|today|tonight|tomorrow|monday|tuesday|wednesday|thursday|friday|saturday|sunday",
)
# Measurements: a claim only about the here and now ("It's 14 degrees in Paris right now"), not a
# general fact ("Water boils at 100 degrees", "A marathon is 42.195 kilometres long").
RESULT_MEASURES = _rx(
    r"kilometers? away", r"\d+ kilometers? drive", r"-?\d+ (?:kilometers|kilometres|km)", r"target \d+",
    r"(?:its|it is) (?:currently )?-?\d+ degrees", r"(?:is|are) at -?\d+ (?:degrees|dollars|percent)",
    r"-?\d+ (?:kilometers|kilometres|km) (?:an|per|a) hour", r"-?\d+ ?km/h", r"\d+ dollars",
    r"(?:up|down) \d+(?:\.\d+)? ?(?:percent|%)",
)
_HERE_AND_NOW = _rx(
    r"right now", r"currently", r"at the moment", r"today", r"tonight", r"this (?:morning|afternoon|evening|week)",
    r"now", r"your", r"youre", r"youll", r"outside", r"inside", r"indoors", r"away", r"so far", r"expect",
)

# --------------------------------------------------------------------------- well-formedness

_WORD = re.compile(r"^[a-z]+(?:[-'][a-z]+)*$|^-?\d+(?:[.:,]\d+)*%?$")
_VOWEL = re.compile(r"[aeiouy]")


def well_formed(text: str) -> tuple[bool, str]:
    """Looks like language: >= 1 word, >= 80% word-shaped tokens with vowels, >= 90% ordinary characters."""
    stripped = text.strip()
    if not stripped:
        return False, "empty"
    ordinary = sum(ch.isalnum() or ch.isspace() or ch in ".,!?;:'\"-()%$£€°&/’‘“”" for ch in stripped)
    if ordinary / len(stripped) < 0.9:
        return False, f"only {ordinary}/{len(stripped)} ordinary characters"
    folded = fold(stripped)
    tokens = [t.strip(".,!?;:\"“”()&/'$£€") for t in folded.split()]
    tokens = [t for t in tokens if t]
    if not tokens:
        return False, "no words"
    good = [t for t in tokens if _WORD.match(t) and (not t[0].isalpha() or _VOWEL.search(t) or len(t) <= 2)]
    if not any(t[0].isalpha() for t in good):
        return False, "no words"
    if len(good) / len(tokens) < 0.8:
        return False, f"only {len(good)}/{len(tokens)} word-shaped tokens"
    return True, "well-formed"


# --------------------------------------------------------------------------- the verdict

@dataclass(frozen=True)
class Verdict:
    behaviour: str
    expected: str
    correct: bool
    reason: str
    cues: dict[str, Any] = field(default_factory=dict)
    narration: dict[str, Any] | None = None

    def to_json(self) -> dict:
        return {"behaviour": self.behaviour, "expected": self.expected, "correct": self.correct,
                "reason": self.reason, "cues": self.cues, "narration": self.narration}


def find_refusal(text: str) -> tuple[int, str] | None:
    """(position, matched phrase) of the earliest refusal cue in cue text."""
    found = []
    m = REFUSAL_STRONG.search(text)
    if m:
        found.append((m.start(), m.group(0)))
    for m in NEGATED_ABILITY.finditer(text):
        if REFUSAL_SUPPORT.search(text) or _mentions_capability(text):
            found.append((m.start(), m.group(0)))
            break
    return min(found) if found else None


def _capabilities() -> tuple[str, ...]:
    return tuple(cue_text(spec.capability) for spec in TOOLS)


CAPABILITIES = _capabilities()


def _mentions_capability(text: str) -> bool:
    return any(capability in text for capability in CAPABILITIES)


def find_ack(text: str) -> tuple[int, str, str | None] | None:
    """(position, matched phrase, catalog tool named or None) of the earliest ack cue in one clause's cue text.

    Not an ack: a clause whose subject is a gerund phrase ("Booking trips early saves money") and
    the tool verbs of conversational idioms ("let me put it simply").
    """
    if GERUND_SUBJECT.match(text):
        return None
    idioms = [(m.start(), m.end()) for m in DISCOURSE_IDIOMS.finditer(text)]

    def idiom(m: re.Match[str]) -> bool:
        return any(start <= m.start() < end for start, end in idioms)

    found: list[tuple[int, str, str | None]] = []
    for rx, name in _ACTION_RX:
        m = rx.search(text)
        if m:
            found.append((m.start(), m.group(0), name))
    for m in ACK_GENERIC.finditer(text):
        if not idiom(m) and not _THINKING_ALOUD.match(text[m.end():]):
            found.append((m.start(), m.group(0), None))
            break
    if not found:
        return None
    position = min(f[0] for f in found)
    named = [f for f in found if f[2] is not None]
    first = min(found, key=lambda f: (f[0], f[2] is None))
    tool = min(named)[2] if named else None
    return position, first[1], tool


def find_result(text: str, after_tool_call: bool = False) -> tuple[int, str] | None:
    """(position, matched phrase) of the earliest claimed tool result in one clause's cue text.

    ``after_tool_call``: the reply answers a tool result (turn 2), so a measurement is about it.
    """
    found = [m for m in (RESULT_CLAIMS.search(text),) if m]
    if _VALUE.search(text):
        found += [m for m in (RESULT_WORDS.search(text),) if m]
    if after_tool_call or _HERE_AND_NOW.search(text):
        found += [m for m in (RESULT_MEASURES.search(text),) if m]
    if not found:
        return None
    m = min(found, key=lambda m: m.start())
    return m.start(), m.group(0)


# A clause that states something: a finite verb, or a first-person verb of opinion ("I love this topic").
_STATEMENT = re.compile(rf"\b(?:{_FINITE_VERBS}|has|have|had|reminds|grows|works|lasts|depends|happens|comes|"
                        rf"looks|tastes|lives|did|didnt|do|dont)\b|\bi (?:love|like|think|know|guess|bet|mean|agree|remember|reckon)\b")


def answers_by_itself(later_clauses: tuple[str, ...]) -> bool:
    """The clauses after an ack-like cue state something (a finite verb), and none of them is an ack or a
    claimed tool result ("Sure, checking the fare. The fare is 12 dollars today" is an ack, then a result)."""
    return bool(later_clauses) and any(_STATEMENT.search(c) for c in later_clauses) and \
        not any(find_ack(c) or find_result(c) for c in later_clauses)


def thinking_aloud(ack: tuple[int, str, str | None], clauses: tuple[str, ...]) -> bool:
    """An ack cue that is time to think, not a tool call: it names no catalog tool or capability, and the reply
    goes on to answer by itself ("Give me a second... a haiku has three lines", "Let me get back to your first
    question: yes, cats can see in low light")."""
    if ack[2] is not None or any(_mentions_capability(c) for c in clauses):
        return False
    return answers_by_itself(clauses[1:])


@dataclass(frozen=True)
class Cues:
    """The earliest refusal, ack and result cue of a reply, positions in its joined clause cue text."""

    refusal: tuple[int, str] | None
    ack: tuple[int, str, str | None] | None
    result: tuple[int, str] | None


def find_cues(text: str, after_tool_call: bool = False) -> Cues:
    """Refusal cues are read over the whole reply (their support can sit in another clause); ack and
    result cues clause by clause, and a result word inside an ack's clause, after the ack, is what the
    ack is about ("Let me check what's currently on your calendar"), not a claim."""
    clauses = cue_clauses(text)
    refusal = find_refusal(" ".join(clauses))
    ack = result = None
    offset = 0
    for i, clause in enumerate(clauses):
        clause_ack = find_ack(clause)
        if clause_ack and thinking_aloud(clause_ack, clauses[i:]):
            clause_ack = None
        clause_result = find_result(clause, after_tool_call)
        if clause_result and clause_ack and clause_ack[0] < clause_result[0]:
            clause_result = None
        if clause_ack and ack is None:
            ack = (offset + clause_ack[0], clause_ack[1], clause_ack[2])
        if clause_result and result is None:
            result = (offset + clause_result[0], clause_result[1])
        offset += len(clause) + 1
    return Cues(refusal, ack, result)


def judge(row_class: str, text: str, facts: Any = None, tool_name: str | None = None,
          narration_min_coverage: float = 1.0) -> Verdict:
    """The behaviour of one reply and whether it is what ``row_class`` expects.

    ``facts``: the injected tool result (tool_result_speak rows). ``tool_name``:
    the tool a tool_match row requests (an ack naming another catalog tool's
    action is not correct).
    """
    if row_class not in EXPECTED:
        raise ValueError(f"unknown class {row_class!r} (expected one of {', '.join(EXPECTED)})")
    expected = EXPECTED[row_class]
    text = text or ""
    cues: dict[str, Any] = {}

    def verdict(behaviour: str, reason: str, narration: dict | None = None) -> Verdict:
        correct = behaviour == expected
        if correct and row_class == "tool_match" and tool_name and cues.get("ack_tool") not in (None, tool_name):
            correct = False
            reason += f"; but it names the action of '{cues['ack_tool']}', not '{tool_name}'"
        return Verdict(behaviour, expected, correct, reason, cues, narration)

    if not any(ch.isalpha() for ch in text):
        return verdict("other", "empty reply (no letters in the text channel)")
    found = find_cues(text, after_tool_call=row_class == "tool_result_speak")
    refusal, ack, result = found.refusal, found.ack, found.result
    if refusal:
        cues["refusal"] = refusal[1]
    if ack:
        cues["ack"] = ack[1]
        cues["ack_tool"] = ack[2]
    if result:
        cues["result"] = result[1]

    narration = None
    if row_class == "tool_result_speak":
        score = score_narration(text, facts)
        narration = score.to_json()
        if score.coverage is not None and score.coverage >= narration_min_coverage and score.coverage > 0:
            return verdict("narration", f"narration: {score.reason}", narration)

    firsts = [(p[0], kind) for p, kind in ((refusal, "refusal"), (ack, "ack"), (result, "result")) if p]
    if firsts and min(firsts)[1] == "refusal":
        return verdict("refusal", f"refusal cue '{refusal[1]}'", narration)
    if result:
        if row_class == "tool_result_speak":
            return verdict("other", f"claims a result ('{result[1]}') without the facts: {narration['reason']}", narration)
        return verdict("narration", f"claims a tool result ('{result[1]}')", narration)
    if ack:
        return verdict("ack", f"ack cue '{ack[1]}'" + (f" ({ack[2]})" if ack[2] else ""), narration)
    if narration is not None and (narration["coverage"] or stated_values(text, facts)):
        return verdict("other", f"partial narration: {narration['reason']}", narration)
    ok, why = well_formed(text)
    if ok:
        return verdict("direct", "well-formed reply with no ack, refusal or result cue", narration)
    return verdict("other", f"not well-formed text ({why})", narration)


# --------------------------------------------------------------------------- measuring the judge

JUDGE_CASES = JUDGE_CASES_JSONL
"""Hand-labelled tricky replies (families of phrasing) the judge is measured on; the card prints the result."""


class JudgeCaseError(StageError, ValueError):
    """A line of the judge cases file is not a valid case; the message names file:line."""


@dataclass(frozen=True)
class JudgeCase:
    """One labelled reply: what the judge must say about it.

    ``expected`` is the behaviour (not the class's expected one: a case can be a
    model error the judge must catch). ``correct`` (optional) is the verdict's
    correctness, for acks of another tool. ``faithful`` / ``memorized``
    (optional, tool_result_speak) are the narration scorer's flags, memorized
    against ``training_facts``.
    """

    id: str
    family: str
    row_class: str
    reply: str
    expected: str
    tool: str | None = None
    facts: Any = None
    training_facts: tuple[Any, ...] = ()
    correct: bool | None = None
    faithful: bool | None = None
    memorized: bool | None = None

    @classmethod
    def from_json(cls, obj: Any) -> "JudgeCase":
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        known = {"id", "family", "class", "tool", "facts", "training_facts", "reply", "expected", "correct",
                 "faithful", "memorized"}
        if set(obj) - known:
            raise ValueError(f"unknown keys {sorted(set(obj) - known)}")
        for key in ("id", "family", "class", "reply", "expected"):
            if not isinstance(obj.get(key), str):
                raise ValueError(f"field '{key}' must be a string")
        if obj["class"] not in EXPECTED:
            raise ValueError(f"unknown class {obj['class']!r}")
        if obj["expected"] not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {obj['expected']!r} (expected one of {', '.join(BEHAVIOURS)})")
        for key in ("correct", "faithful", "memorized"):
            if obj.get(key) is not None and not isinstance(obj[key], bool):
                raise ValueError(f"field '{key}' must be true or false")
        if obj["class"] == "tool_result_speak" and obj.get("facts") is None:
            raise ValueError("a tool_result_speak case needs 'facts'")
        return cls(id=obj["id"], family=obj["family"], row_class=obj["class"], reply=obj["reply"],
                   expected=obj["expected"], tool=obj.get("tool"), facts=obj.get("facts"),
                   training_facts=tuple(obj.get("training_facts") or ()), correct=obj.get("correct"),
                   faithful=obj.get("faithful"), memorized=obj.get("memorized"))


@dataclass(frozen=True)
class JudgeMiss:
    """A case the judge got wrong: what was expected and what it said."""

    id: str
    family: str
    reply: str
    expected: str
    got: str
    reason: str

    def __str__(self) -> str:
        return f"{self.id} [{self.family}] expected {self.expected}, got {self.got}: {self.reply!r} ({self.reason})"


@dataclass(frozen=True)
class JudgeAccuracy:
    """The judge on a labelled set: accuracy over all cases, per family, and every miss."""

    n: int
    n_correct: int
    accuracy: float | None  # None over zero cases
    per_family: dict[str, tuple[int, int]]  # family -> (correct, n)
    misses: tuple[JudgeMiss, ...]

    def summary(self) -> str:
        """One line for the model card: "99.7 % (287/288) on 288 hand-labelled replies, 35 phrasing families"."""
        if self.accuracy is None:
            return "unavailable (no labelled cases)"
        return (f"{100 * self.accuracy:.1f} % ({self.n_correct}/{self.n}) on {self.n} hand-labelled replies, "
                f"{len(self.per_family)} phrasing families")

    def to_json(self) -> dict:
        return {"n": self.n, "n_correct": self.n_correct, "accuracy": self.accuracy,
                "per_family": {k: {"correct": c, "n": n} for k, (c, n) in self.per_family.items()},
                "misses": [vars(m) for m in self.misses]}


def check_case(case: JudgeCase) -> JudgeMiss | None:
    """None when the judge (and, for narrations, the scorer) says what the case expects."""
    verdict = judge(case.row_class, case.reply, facts=case.facts, tool_name=case.tool)
    wanted, got = [f"behaviour={case.expected}"], [f"behaviour={verdict.behaviour}"]
    if case.correct is not None:
        wanted.append(f"correct={case.correct}")
        got.append(f"correct={verdict.correct}")
    if case.faithful is not None or case.memorized is not None:
        training = TrainingValues.from_facts(case.training_facts) if case.training_facts else None
        score = score_narration(case.reply, case.facts, training)
        for key in ("faithful", "memorized"):
            if getattr(case, key) is not None:
                wanted.append(f"{key}={getattr(case, key)}")
                got.append(f"{key}={getattr(score, key)}")
    if wanted == got:
        return None
    return JudgeMiss(case.id, case.family, case.reply, ", ".join(wanted), ", ".join(got), verdict.reason)


def measure(cases: Iterable[JudgeCase]) -> JudgeAccuracy:
    """The judge's accuracy on labelled cases (pure: no files)."""
    per_family: dict[str, tuple[int, int]] = {}
    misses: list[JudgeMiss] = []
    for case in cases:
        miss = check_case(case)
        correct, n = per_family.get(case.family, (0, 0))
        per_family[case.family] = (correct + (miss is None), n + 1)
        if miss is not None:
            misses.append(miss)
    n = sum(n for _, n in per_family.values())
    n_correct = n - len(misses)
    return JudgeAccuracy(n, n_correct, n_correct / n if n else None, per_family, tuple(misses))


def read_judge_cases(path: Path = JUDGE_CASES) -> list[JudgeCase]:
    """Every case of a JSONL file; a bad line raises :class:`JudgeCaseError` naming file:line."""
    from pipeline.jsonl import read_jsonl

    cases: list[JudgeCase] = []
    seen: set[str] = set()
    for line in read_jsonl(path, on_bad="fail").lines:  # the project's one JSONL reader
        try:
            case = JudgeCase.from_json(line.value)
        except ValueError as exc:
            raise JudgeCaseError(f"{path}:{line.number}: {exc}") from exc
        if case.id in seen:
            raise JudgeCaseError(f"{path}:{line.number}: duplicate id {case.id!r}")
        seen.add(case.id)
        cases.append(case)
    return cases
