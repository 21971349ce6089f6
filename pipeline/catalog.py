"""The tool catalog and the maker of synthetic v4-style rows.

A :class:`ToolSpec` says everything the generator needs about one tool: its
description (what the system prompt lists), how users ask for it, how the
assistant acknowledges or refuses it, what its result looks like and how a
result is narrated. Templates use ``{slot}`` placeholders whose values come
from the pools in ``pipeline/templates.py`` (``SLOT_POOLS`` says which).

:class:`RowMaker` turns the catalog into rows of the four classes. It draws
every template and value from one *side* of the pools ("train" or "heldout"),
which is how held-out and novel-facts rows avoid sharing text or fact values
with training.

``RELATED`` is the related-tool map used for hard negatives: a tool_miss row
is *hard* when the requested tool is missing but a related one is listed
(traffic asked, maps listed).
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any

from pipeline import templates as T
from pipeline.records import DatasetRow, Tool, ToolCall, Turn1
from pipeline.templates import Side, on_side

SLOT_POOLS: dict[str, tuple] = {
    "city": T.CITIES, "time": T.TIMES, "day": T.DAYS, "minutes": T.MINUTES, "temp": T.TEMPS_C,
    "wind": T.WIND_KMH, "conditions": T.CONDITIONS, "temperature": T.SETPOINTS, "indoor": T.SETPOINTS,
    "percent": T.PERCENTS, "km": T.DISTANCES_KM, "fare": T.FARES, "price": T.STOCK_PRICES, "move": T.STOCK_MOVES,
    "contact": T.CONTACTS, "subject": T.EMAIL_SUBJECTS, "message": T.TEXT_MESSAGES, "destination": T.DESTINATIONS,
    "road": T.ROADS, "congestion": T.CONGESTION, "room": T.ROOMS, "color": T.LIGHT_COLORS, "event": T.EVENTS,
    "artist": T.ARTISTS, "genre": T.GENRES, "topic": T.NEWS_TOPICS, "headline": T.HEADLINES, "task": T.TASKS,
    "company": T.COMPANIES,
}


@dataclass(frozen=True)
class ToolSpec:
    """One tool of the catalog.

    ``requests`` are user phrasings (every one names the slots that ``action``
    uses); ``action`` is a gerund phrase for acks ("checking the weather in
    {city}"); ``capability`` a bare verb phrase for refusals ("check the
    weather"); ``facts`` the tool result as the model sees it in turn 2, one
    comma-separated field per value; ``narrations`` speak that result.
    """

    name: str
    description: str
    capability: str
    action: str
    requests: tuple[str, ...]
    facts: str
    narrations: tuple[str, ...]

    @property
    def tool(self) -> Tool:
        return Tool(self.name, self.description)


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "weather", "get current weather and forecasts for a location", "check the weather",
        "checking the weather in {city}",
        ("what's the weather in {city}", "What's it like outside in {city} right now?", "Do I need an umbrella in {city} today?",
         "how's the weather looking in {city}", "give me the forecast for {city}", "Is it cold in {city}?",
         "what's the temperature in {city} right now", "tell me the weather for {city} please"),
        "{city}: {temp}°C, {conditions}, wind {wind} km/h",
        ("Right now in {city} it's {temp} degrees with {conditions}, and the wind is around {wind} kilometers an hour.",
         "{city} is at {temp} degrees at the moment, {conditions}, with wind at {wind} kilometers per hour.",
         "It's currently {temp} degrees in {city} with {conditions}; expect wind of about {wind} kilometers an hour.",
         "The weather in {city}: {conditions}, {temp} degrees, and winds near {wind} kilometers an hour."),
    ),
    ToolSpec(
        "alarm", "set or cancel alarms", "set alarms", "setting an alarm for {time}",
        ("wake me up at {time}", "set an alarm for {time}", "Can you set my alarm for {time}?",
         "I need an alarm at {time} {day}", "alarm for {time} please", "please get me up at {time}",
         "set a wake-up alarm at {time} {day}", "make sure I'm up by {time}"),
        "alarm set for {time} {day}, snooze {minutes} minutes",
        ("Your alarm is set for {time} {day}, with a {minutes} minute snooze.",
         "Done: you'll be woken at {time} {day}, and snooze gives you {minutes} more minutes.",
         "I've set the alarm for {time} {day}; snoozing adds {minutes} minutes.",
         "All set, an alarm for {time} {day} with {minutes} minutes of snooze."),
    ),
    ToolSpec(
        "email", "read and send emails", "access your email", "checking your email from {contact}",
        ("any new emails from {contact}?", "read me the last email from {contact}", "Did {contact} email me?",
         "check if {contact} sent me anything", "what did {contact} say in their email", "open my latest email from {contact}",
         "did I get an email from {contact} today", "Read {contact}'s most recent email."),
        "latest email from {contact}: {subject}, received {time}",
        ("Your latest email from {contact} is about {subject}; it came in at {time}.",
         "{contact} emailed you at {time} about {subject}.",
         "There's an email from {contact} received at {time}, subject: {subject}.",
         "The newest message from {contact} arrived at {time} and it's about {subject}."),
    ),
    ToolSpec(
        "maps", "get directions and travel times to places", "look up directions", "finding directions to {destination}",
        ("how do I get to {destination}", "Give me directions to {destination}.", "navigate to {destination}",
         "what's the fastest route to {destination}", "how far is {destination}", "take me to {destination}",
         "Show me the way to {destination}.", "how long does it take to drive to {destination}"),
        "route to {destination}: {km} km, {minutes} minutes via {road}",
        ("{destination} is {km} kilometers away, about {minutes} minutes if you take {road}.",
         "The best route to {destination} is via {road}: {km} kilometers, around {minutes} minutes.",
         "Take {road}; {destination} is {km} kilometers and roughly {minutes} minutes away.",
         "It's about {minutes} minutes to {destination} via {road}, a {km} kilometer drive."),
    ),
    ToolSpec(
        "traffic", "check live traffic conditions on roads", "check traffic", "checking traffic on {road}",
        ("how's traffic on {road}", "Is {road} backed up right now?", "any traffic jams on {road}?",
         "what's the traffic like on {road}", "check the traffic on {road} for me", "Is {road} clear?",
         "how bad is {road} this morning", "are there delays on {road}"),
        "{road}: {congestion}, {minutes} minute delay",
        ("On {road} there's {congestion}, adding about {minutes} minutes.",
         "{road} currently has {congestion}; expect a delay of around {minutes} minutes.",
         "Traffic on {road}: {congestion}, with roughly a {minutes} minute delay.",
         "Heads up, {road} shows {congestion} and about {minutes} extra minutes."),
    ),
    ToolSpec(
        "iot_lights", "turn smart lights on or off, dim them or change their color", "control the lights",
        "adjusting the {room} lights",
        ("turn on the {room} lights", "Lights on in the {room}, please.", "can you light up the {room}",
         "set the {room} lights to {color}", "dim the {room} lights to {percent} percent", "brighten the {room}",
         "make the {room} lights {color}", "switch the lights on in the {room}"),
        "{room} lights: {percent}% brightness, color {color}",
        ("The {room} lights are now at {percent} percent brightness in {color}.",
         "Done, the {room} is lit at {percent} percent with a {color} tone.",
         "I've set the {room} lights to {color} at {percent} percent.",
         "Your {room} lights are on: {color}, {percent} percent brightness."),
    ),
    ToolSpec(
        "calendar", "view and add calendar events", "access your calendar", "checking your calendar for {day}",
        ("what's on my calendar {day}", "Do I have anything scheduled {day}?", "what meetings do I have {day}",
         "am I free {day}", "check my schedule for {day}", "What does my day look like {day}?",
         "any appointments {day}", "read me my agenda for {day}"),
        "{day}: {event} at {time}",
        ("{day} you have your {event} at {time}.",
         "Your calendar shows one thing {day}: the {event} at {time}.",
         "You've got the {event} at {time}, {day}.",
         "Looking at {day}, there's a {event} scheduled for {time}."),
    ),
    ToolSpec(
        "timer", "start, check or cancel countdown timers", "set timers", "starting a {minutes} minute timer",
        ("set a timer for {minutes} minutes", "Start a {minutes} minute timer.", "timer for {minutes} minutes please",
         "count down {minutes} minutes", "can you time {minutes} minutes for me", "set a {minutes} minute timer for the pasta",
         "remind me in {minutes} minutes with a timer", "Give me a {minutes} minute countdown."),
        "timer for {minutes} minutes started, ends at {time}",
        ("Your {minutes} minute timer is running and will go off at {time}.",
         "Timer started: {minutes} minutes, ending at {time}.",
         "I've started a {minutes} minute countdown; it ends at {time}.",
         "The timer is set for {minutes} minutes, so it'll ring at {time}."),
    ),
    ToolSpec(
        "music", "play songs, artists, albums and playlists", "play music", "putting on {artist}",
        ("play some {artist}", "Put on {artist}.", "I want to listen to {artist}", "can you play {artist} for me",
         "play music by {artist}", "Shuffle {artist}, please.", "let's hear some {artist}", "start playing {artist}"),
        "now playing {artist}, {genre} mix, volume {percent}%",
        ("Now playing {artist} from a {genre} mix at {percent} percent volume.",
         "{artist} is on, part of a {genre} mix, volume at {percent} percent.",
         "I've started {artist} in a {genre} mix; the volume is {percent} percent.",
         "You're listening to {artist}, {genre} mix, at {percent} percent volume."),
    ),
    ToolSpec(
        "news", "get the latest news headlines by topic", "get the news", "getting the latest {topic} news",
        ("what's the latest {topic} news", "Give me the {topic} headlines.", "any {topic} news today?",
         "read me the top {topic} story", "what's happening in {topic}", "Catch me up on {topic} news.",
         "tell me the {topic} headlines", "What's new in {topic}?"),
        "top {topic} story: {headline}",
        ("The top {topic} story right now: {headline}.",
         "In {topic} news today: {headline}.",
         "Here's the leading {topic} headline: {headline}.",
         "Today's big {topic} story: {headline}."),
    ),
    ToolSpec(
        "rideshare", "book rides and get fare estimates", "book a ride", "requesting a ride to {destination}",
        ("get me a car to {destination}", "How much is a ride to {destination}?", "book me a lyft to {destination}",
         "I need an uber to {destination}", "call a cab to {destination}", "Order a ride to {destination}.",
         "what would a taxi to {destination} cost", "can you book a ride to {destination}"),
        "ride to {destination}: fare about ${fare}, driver arrives in {minutes} minutes",
        ("A ride to {destination} is about {fare} dollars, and the driver will be there in {minutes} minutes.",
         "Your ride to {destination} costs around {fare} dollars; pickup in {minutes} minutes.",
         "The driver arrives in {minutes} minutes and the fare to {destination} is about {fare} dollars.",
         "Booked: {destination}, roughly {fare} dollars, with a {minutes} minute wait."),
    ),
    ToolSpec(
        "reminders", "create and list reminders", "set reminders", "setting a reminder to {task}",
        ("remind me to {task}", "Set a reminder to {task}.", "don't let me forget to {task}",
         "can you remind me to {task} {day}", "add a reminder: {task}", "Please remind me to {task} at {time}.",
         "I need a reminder to {task}", "remember that I have to {task}"),
        "reminder to {task}, {day} at {time}",
        ("I'll remind you to {task} {day} at {time}.",
         "Reminder saved: {task}, {day} at {time}.",
         "You'll get a nudge {day} at {time} to {task}.",
         "Okay, {day} at {time} I'll tell you to {task}."),
    ),
    ToolSpec(
        "thermostat", "read and set the home thermostat temperature", "adjust the thermostat",
        "setting the thermostat to {temperature} degrees",
        ("set the thermostat to {temperature} degrees", "Make it {temperature} degrees in here.",
         "change the heating to {temperature} degrees", "can you turn the heat to {temperature}",
         "warm the house up to {temperature} degrees", "Put the thermostat on {temperature}.",
         "I'd like it at {temperature} degrees", "cool the house down to {temperature} degrees"),
        "thermostat set to {temperature} degrees, currently {indoor} degrees indoors",
        ("The thermostat is now set to {temperature} degrees; it's {indoor} degrees inside at the moment.",
         "Done, target {temperature} degrees, and the house is currently at {indoor}.",
         "I've set it to {temperature} degrees. Right now it's {indoor} degrees indoors.",
         "It's {indoor} degrees inside, and the thermostat is heading to {temperature}."),
    ),
    ToolSpec(
        "stocks", "look up stock prices and market moves", "look up stock prices", "looking up {company} stock",
        ("how is {company} stock doing", "What's {company} trading at?", "check the {company} share price",
         "what's the price of {company} stock", "Is {company} up today?", "give me a quote for {company}",
         "how did {company} shares move today", "look up {company} on the market"),
        "{company} trading at ${price}, {move} today",
        ("{company} is trading at {price} dollars, {move} today.",
         "Shares of {company} are at {price} dollars, {move} on the day.",
         "{company} stock: {price} dollars, {move} so far today.",
         "Right now {company} sits at {price} dollars, which is {move} today."),
    ),
    ToolSpec(
        "messages", "send and read text messages", "send text messages", "sending your message to {contact}",
        ("text {contact} that {message}", "Send {contact} a message saying {message}.", "message {contact}: {message}",
         "tell {contact} by text that {message}", "can you text {contact} {message}", "Shoot {contact} a text: {message}.",
         "send a text to {contact} saying {message}", "let {contact} know {message} by text"),
        "message to {contact} delivered at {time}, text {message}",
        ("Your message to {contact} was delivered at {time}: {message}.",
         "Delivered to {contact} at {time}, saying {message}.",
         "{contact} got your text at {time}: {message}.",
         "I sent {contact} the text {message}, and it was delivered at {time}."),
    ),
)

TOOLS_BY_NAME: dict[str, ToolSpec] = {spec.name: spec for spec in TOOLS}

_RELATED_PAIRS = (
    ("traffic", "maps"), ("rideshare", "maps"), ("rideshare", "traffic"),
    ("alarm", "timer"), ("alarm", "reminders"), ("timer", "reminders"), ("calendar", "reminders"),
    ("iot_lights", "thermostat"), ("weather", "thermostat"),
    ("email", "messages"), ("email", "calendar"),
    ("news", "stocks"), ("music", "news"),
)
RELATED: dict[str, frozenset[str]] = {
    spec.name: frozenset({b for a, b in _RELATED_PAIRS if a == spec.name} | {a for a, b in _RELATED_PAIRS if b == spec.name})
    for spec in TOOLS
}
"""Symmetric related-tool map: a user asking for one may be tempted by the other."""


def is_hard_negative(row: DatasetRow) -> bool:
    """A tool_miss row whose listed tools include one related to the requested tool."""
    return row.row_class == "tool_miss" and bool(RELATED.get(row.requested_tool or "", frozenset()) & set(row.tool_names))


def placeholders(template: str) -> list[str]:
    """The ``{slot}`` names a template uses, in order."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


class RowMaker:
    """Makes synthetic rows of each class from one side of the pools.

    All randomness comes from ``rng``, so the same seed gives the same rows.
    Each row lists ``tools_per_row`` (inclusive range) tools in random order.
    """

    def __init__(self, rng: random.Random, side: Side, tools_per_row: tuple[int, int] = (2, 5)):
        self.rng = rng
        self.side = side
        self.tools_per_row = tools_per_row

    # ---- drawing helpers

    def pick(self, items: tuple) -> Any:
        return self.rng.choice(on_side(items, self.side))

    def draw_values(self, spec: ToolSpec) -> dict[str, Any]:
        """One value (a string or a number) for every slot the tool's templates use."""
        names = dict.fromkeys(placeholders(" ".join((spec.action, spec.facts, *spec.requests, *spec.narrations))))
        return {name: self.pick(SLOT_POOLS[name]) for name in names}

    def listed_tools(self, must: ToolSpec | None = None, avoid: frozenset[str] = frozenset()) -> tuple[Tool, ...]:
        """A random subset of the catalog: ``must`` included, nothing in ``avoid``."""
        low, high = self.tools_per_row
        others = [spec for spec in TOOLS if spec is not must and spec.name not in avoid]
        chosen = self.rng.sample(others, self.rng.randint(low, high) - (must is not None))
        if must is not None:
            chosen.insert(self.rng.randrange(len(chosen) + 1), must)
        return tuple(spec.tool for spec in chosen)

    def request(self, spec: ToolSpec) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(user text, every slot value, the tool-call arguments = slots the user named)."""
        values = self.draw_values(spec)
        phrasing = self.pick(spec.requests)
        arguments = {name: values[name] for name in placeholders(phrasing)}
        return phrasing.format(**values), values, arguments

    def ack(self, spec: ToolSpec, values: dict[str, Any]) -> str:
        return self.pick(T.ACK_TEMPLATES).format(action=spec.action.format(**values))

    # ---- one row per class

    def tool_match(self, row_id: str) -> DatasetRow:
        spec = self.rng.choice(TOOLS)
        user, values, arguments = self.request(spec)
        return DatasetRow(row_id, "tool_match", self.listed_tools(must=spec), user, self.ack(spec, values),
                          tool_call=ToolCall(spec.name, arguments))

    def tool_result_speak(self, row_id: str) -> DatasetRow:
        spec = self.rng.choice(TOOLS)
        user, values, arguments = self.request(spec)
        turn1 = Turn1(user, self.ack(spec, values), ToolCall(spec.name, arguments))
        narration = self.pick(spec.narrations).format(**values)
        narration = narration[0].upper() + narration[1:]
        return DatasetRow(row_id, "tool_result_speak", self.listed_tools(must=spec), user, narration,
                          facts=spec.facts.format(**values), turn1=turn1)

    def tool_miss(self, row_id: str, hard: bool) -> DatasetRow:
        """A request for an unlisted tool; ``hard`` lists a related tool, otherwise none is."""
        spec = self.rng.choice(TOOLS)
        user, _, _ = self.request(spec)
        related = RELATED[spec.name]
        if hard:
            bait = TOOLS_BY_NAME[self.rng.choice(sorted(related))]
            tools = self.listed_tools(must=bait, avoid=frozenset({spec.name}))
        else:
            tools = self.listed_tools(avoid=related | {spec.name})
        refusal = self.pick(T.REFUSAL_TEMPLATES).format(capability=spec.capability)
        return DatasetRow(row_id, "tool_miss", tools, user, refusal, requested_tool=spec.name)

    def non_tool(self, row_id: str) -> DatasetRow:
        kind = self.rng.choice((self._small_talk, self._trivia, self._capital, self._arithmetic, self._spelling))
        user, assistant = kind()
        return DatasetRow(row_id, "non_tool", self.listed_tools(), user, assistant)

    # ---- non-tool chat kinds: each returns (user, assistant)

    def _small_talk(self) -> tuple[str, str]:
        return self.pick(T.SMALL_TALK)

    def _trivia(self) -> tuple[str, str]:
        return self.pick(T.TRIVIA)

    def _capital(self) -> tuple[str, str]:
        country, capital = self.pick(T.COUNTRY_CAPITALS)
        return (self.pick(T.CAPITAL_QUESTIONS).format(country=country),
                self.pick(T.CAPITAL_ANSWERS).format(country=country, capital=capital))

    def _arithmetic(self) -> tuple[str, str]:
        a, b = sorted((self.pick(T.NUMBERS), self.pick(T.NUMBERS)), reverse=True)
        op, compute = self.rng.choice(T.ARITHMETIC_OPERATIONS)
        slots = {"a": a, "b": b, "op": op, "result": compute(a, b)}
        return self.pick(T.ARITHMETIC_QUESTIONS).format(**slots), self.pick(T.ARITHMETIC_ANSWERS).format(**slots)

    def _spelling(self) -> tuple[str, str]:
        word = self.pick(T.SPELLING_WORDS)
        slots = {"word": word, "letters": "-".join(word.upper())}
        question = self.pick(T.SPELLING_QUESTIONS).format(**slots)
        answer = self.pick(T.SPELLING_ANSWERS).format(**slots)
        return question, answer[0].upper() + answer[1:]
