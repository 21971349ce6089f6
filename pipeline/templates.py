"""Text pools for the synthetic v4-style dataset: slot values, reply templates, chit-chat.

Pure data, no logic except :func:`on_side`. Every pool is split in two by one
fixed rule, so held-out and novel-facts rows are drawn from values and
phrasings that training never sees:

    item i of a pool belongs to the "heldout" side if i % 4 == 3, else to "train".

The split is what makes the leakage check in ``tasks/dataset.py`` pass by
construction. Two rules keep it that way when you add data:

- a value that can be rendered the same way by two pools must live in one pool
  (e.g. every "N minutes" comes from ``MINUTES``);
- every field of a facts block and every reply template contains at least one
  pooled value or is itself pooled (a field made of fixed words would be shared
  by train and held-out rows).
"""
from __future__ import annotations

from typing import Literal, Sequence, TypeVar

Side = Literal["train", "heldout"]
SIDES: tuple[Side, ...] = ("train", "heldout")

T = TypeVar("T")


def on_side(items: Sequence[T], side: Side) -> tuple[T, ...]:
    """The items of ``items`` that belong to ``side`` (every 4th item is held out)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return tuple(item for i, item in enumerate(items) if (i % 4 == 3) == (side == "heldout"))


# --------------------------------------------------------------------------- slot values
# Times, numbers and names that fill request phrasings, facts and narrations.

CITIES = (
    "Paris", "London", "Tokyo", "Reykjavik", "Berlin", "Madrid", "Rome", "Nairobi",
    "Lisbon", "Dublin", "Chicago", "Montevideo", "Seattle", "Boston", "Denver", "Tbilisi",
    "Toronto", "Sydney", "Melbourne", "Ulaanbaatar", "Mumbai", "Seoul", "Cairo", "Windhoek",
    "Lima", "Oslo", "Vienna", "Kathmandu", "Prague", "Athens", "Istanbul", "Hobart",
    "Bangkok", "Singapore", "Montreal", "Valparaiso",
)
TIMES = tuple(
    f"{hour}:{minute:02d} {half}"
    for half, hours in (("AM", (5, 6, 7, 8, 9, 10, 11)), ("PM", (12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)))
    for hour in hours
    for minute in (0, 15, 30, 45)
)
DAYS = (
    "today", "tomorrow", "on Monday", "on Thursday", "on Tuesday", "on Wednesday",
    "on Friday", "on Sunday", "on Saturday", "this weekend", "next Monday", "next Friday",
)
MINUTES = tuple(range(2, 60))          # "N minutes" anywhere (timers, delays, ETAs)
TEMPS_C = tuple(range(-9, 38))         # outdoor "N°C"
WIND_KMH = tuple(range(3, 55, 2))      # "wind N km/h"
SETPOINTS = tuple(range(15, 28))       # thermostat "N degrees"
PERCENTS = tuple(range(5, 101, 5))     # "N%" brightness or volume
DISTANCES_KM = tuple(range(2, 80, 3))  # "N km"
FARES = tuple(range(7, 95, 2))         # "fare about $N"
STOCK_PRICES = tuple(range(23, 900, 11))
STOCK_MOVES = tuple(f"{direction} {whole}.{tenth}%" for whole in (0, 1, 2, 3) for tenth in range(1, 10, 2)
                    for direction in ("up", "down"))
CONDITIONS = (
    "light rain", "sunny", "overcast", "freezing fog", "partly cloudy", "heavy rain", "drizzle", "hail",
    "clear skies", "scattered showers", "thunderstorms", "sleet", "snow showers", "mist", "windy", "dust haze",
)
CONTACTS = (
    "Sarah", "Alex", "Mom", "Ines", "Priya", "Jordan", "Dad", "Tobias", "Emma", "Liam", "Olivia", "Wanjiru",
    "Noah", "Ava", "Ethan", "Björn", "Mia", "Lucas", "Sofia", "Anouk", "Chloe", "Daniel", "Grace", "Rafael",
    "Omar", "Hannah", "Kenji", "Dmitri", "Fatima", "Diego", "Zoe", "Ngozi",
)
EMAIL_SUBJECTS = (
    "quarterly report draft", "dinner on Friday", "flight confirmation", "lease renewal", "project kickoff notes",
    "invoice due next week", "team offsite agenda", "garden club minutes", "photos from the trip",
    "updated budget", "school pickup schedule", "conference badge", "contract signature", "new hire onboarding",
    "weekend plans", "warranty claim",
)
TEXT_MESSAGES = (
    "I'm running late", "dinner is ready", "call me when you can", "the meeting moved", "I picked up the keys",
    "happy birthday", "I'm on my way home", "can you grab milk", "the package arrived", "see you at the gym",
    "I left my charger at yours", "good luck today", "the train is delayed", "I'll bring dessert",
    "we're parked outside", "the plumber came by",
)
DESTINATIONS = (
    "the airport", "Central Station", "the nearest pharmacy", "the old lighthouse", "the city library",
    "the stadium", "the beach", "the botanical garden", "downtown", "the museum", "the hospital",
    "the ferry terminal", "the mall", "the university", "the harbor", "the ice rink", "the zoo",
    "the convention center", "the farmers market", "the observatory",
)
ROADS = (
    "Highway 9", "Main Street", "the ring road", "Route 4", "the Bay Bridge", "Interstate 90", "Elm Avenue",
    "the coast road", "the tunnel", "Oak Boulevard", "the northern bypass", "Canal Street", "Route 66",
    "Lakeshore Drive", "the river expressway", "Mill Lane",
)
CONGESTION = (
    "heavy congestion", "light traffic", "moderate traffic", "standstill after a breakdown", "stop-and-go traffic",
    "roadworks in one lane", "free-flowing traffic", "slow near the exit", "a minor accident", "lane closures",
    "busy but moving", "queues at the junction",
)
ROOMS = (
    "living room", "kitchen", "bedroom", "attic", "bathroom", "office", "hallway", "sunroom",
    "garage", "porch", "dining room", "wine cellar", "basement", "nursery", "guest room", "laundry room",
)
LIGHT_COLORS = (
    "warm white", "cool white", "soft blue", "amber", "daylight", "pale green", "candlelight", "lavender",
)
EVENTS = (
    "dentist appointment", "team meeting", "yoga class", "pottery workshop", "haircut", "book club",
    "project review", "tax advisor call", "piano lesson", "dinner reservation", "car service", "vet visit",
    "job interview", "parent-teacher conference", "gym session", "wedding rehearsal",
)
ARTISTS = (
    "Taylor Swift", "Miles Davis", "Coldplay", "Ali Farka Touré", "Daft Punk", "Adele", "Queen", "Cesária Évora",
    "Nina Simone", "Radiohead", "Bob Marley", "Khruangbin", "Fleetwood Mac", "Norah Jones", "Kendrick Lamar",
    "Nils Frahm", "Stevie Wonder", "The Beatles", "Billie Eilish", "Tinariwen",
)
GENRES = (
    "jazz", "lo-fi", "classical", "bossa nova", "rock", "hip hop", "country", "afrobeat", "indie pop", "soul",
    "ambient", "flamenco",
)
NEWS_TOPICS = (
    "technology", "sports", "business", "oceanography", "science", "politics", "health", "architecture",
    "world", "local", "climate", "archaeology", "space", "education", "entertainment", "agriculture",
)
HEADLINES = (
    "new battery design doubles phone life", "city opens its longest bike lane", "rare comet visible this week",
    "lost shipwreck found off the coast", "local team wins the regional final", "museum returns ancient masks",
    "heat pump sales reach a record", "glacier retreat slows this year", "startup unveils a solar car",
    "coral reef shows early recovery", "schools adopt a four-day week", "rail line reopens after a decade",
    "volunteers plant a million trees", "telescope spots a water-rich planet", "farmers test drought-proof wheat",
    "library lends out telescopes",
)
TASKS = (
    "call the bank", "water the plants", "pick up groceries", "renew my passport", "take my medicine",
    "pay the rent", "email the landlord", "feed the sourdough starter", "book a haircut", "return the library books",
    "charge the car", "defrost the freezer", "send the birthday card", "back up my laptop", "buy cat food",
    "cancel the gym trial",
)
COMPANIES = (
    "Apple", "Tesla", "Microsoft", "Spotify", "Nvidia", "Amazon", "Netflix", "Nintendo",
    "Google", "Boeing", "Shopify", "Ferrari", "Intel", "Disney", "Airbnb", "Siemens",
)

# --------------------------------------------------------------------------- reply templates
# {action} is a tool's gerund phrase ("checking the weather in Paris");
# {capability} is a tool's bare verb phrase ("check the weather").

ACK_TEMPLATES = (
    "Sure, {action}.",
    "On it, {action} now.",
    "Okay, {action}.",
    "Absolutely, {action} for you.",
    "Got it, {action}.",
    "One moment, {action}.",
    "Alright, {action} right away.",
    "Coming right up, {action}.",
    "You got it, {action}.",
    "Sure thing, {action}.",
    "Right away, {action}.",
    "Happy to help, {action}.",
    "No problem, {action}.",
    "Give me a second, {action}.",
    "Okay, give me a moment, {action}.",
    "Certainly, {action} as we speak.",
    "Let me do that, {action}.",
    "Alright then, {action}.",
    "Understood, {action}.",
    "Hang tight, {action}.",
    "Sure, one second, {action}.",
    "Good idea, {action}.",
    "Yep, {action} now.",
    "Of course, {action} this very moment.",
    "Just a moment, {action}.",
    "Leave it with me, {action}.",
    "Okay, {action} for you now.",
    "With pleasure, {action}.",
)

REFUSAL_TEMPLATES = (
    "Sorry, I can't {capability} right now because that tool isn't available to me.",
    "I'm afraid I can't {capability}; I don't have access to that tool here.",
    "Unfortunately I'm not able to {capability} with the tools I have.",
    "I can't {capability} at the moment, that tool isn't set up for me.",
    "Sorry, I don't have a way to {capability} in this session.",
    "I wish I could help, but I can't {capability} with my current tools.",
    "That's not something I can do here; I'm unable to {capability}.",
    "Apologies, but I can't {capability} since that tool isn't connected.",
    "I'm sorry, I can't {capability} because it isn't one of my available tools.",
    "I'm not able to {capability} right now; that capability isn't enabled.",
    "Sorry, I can't help you {capability}, that tool isn't available.",
    "Regrettably I can't {capability} from here, I don't have that tool.",
    "I can't {capability} for you, since it's outside the tools I was given.",
    "Sorry about that, but I have no tool to {capability} today.",
    "I'd love to, but I can't {capability} with what's available to me.",
    "Unfortunately I can't {capability}; nothing in my toolset does that.",
    "I don't have access to a tool that can {capability}, sorry.",
    "Sorry, I'm unable to {capability} because that isn't among my tools.",
    "I can't {capability} in this conversation, that tool isn't listed for me.",
    "My apologies, but I can't {capability} here.",
    "Sorry, that's beyond what I can do: I can't {capability} right now.",
    "I'm afraid that's not possible, as I can't {capability} with these tools.",
    "Unfortunately, I have no way to {capability} at the moment.",
    "That's outside my reach, I'm sorry; I can't {capability}.",
    "Sorry, I can't {capability}, it's not something my tools cover.",
    "I'm sorry, but I'm not set up to {capability}.",
    "I can't {capability} right now, I'm sorry; that tool isn't on my list.",
    "I'm sorry, but there's no tool here that lets me {capability}.",
)

# --------------------------------------------------------------------------- non-tool chat
# Each pair's reply is unique: two pairs sharing a reply would leak across sides.

SMALL_TALK = (
    ("Good morning!", "Good morning! I hope your day is off to a nice start."),
    ("How are you today?", "I'm doing well, thanks for asking. How about you?"),
    ("Thanks, that was helpful.", "You're welcome, I'm glad it helped."),
    ("Have a nice flight.", "Thank you, that's kind of you. Safe travels to you too."),
    ("Tell me a joke.", "Why did the scarecrow win an award? Because he was outstanding in his field."),
    ("I'm feeling a bit tired.", "Sorry to hear that. Maybe a short break or a glass of water would help."),
    ("What's your favorite color?", "I don't have one myself, but I hear a lot of people love blue."),
    ("We have that package.", "Great, thanks for letting me know."),
    ("Good night.", "Good night! Sleep well."),
    ("I just got a new puppy!", "Congratulations! Puppies bring so much energy and fun."),
    ("Can you cheer me up?", "Of course. You're doing better than you think, and today still has time to surprise you."),
    ("I passed my driving test.", "That's fantastic news, well done on passing!"),
    ("What should I cook tonight?", "How about a simple pasta with garlic, olive oil and some fresh vegetables?"),
    ("Do you like music?", "I can't listen the way you do, but I love talking about music."),
    ("I'm bored.", "Maybe try a short walk, a new podcast, or a quick puzzle."),
    ("It's my birthday today.", "Happy birthday! I hope it's a wonderful day."),
    ("Never mind.", "No worries, just let me know if you need anything."),
    ("That's all for now.", "Alright, I'm here whenever you need me."),
    ("You're funny.", "Thank you, I try my best to keep things light."),
    ("I'm nervous about my exam.", "That's completely normal. You've prepared, so take a deep breath and trust yourself."),
    ("What's up?", "Not much, just here and ready to help. What's on your mind?"),
    ("I finished my first marathon!", "Wow, congratulations! That takes serious dedication."),
    ("Any tips for sleeping better?", "Try keeping a regular bedtime and putting screens away an hour before bed."),
    ("Hello there.", "Hi! What can I do for you?"),
    ("I love rainy days.", "Rainy days are great for a good book and a warm drink."),
    ("Do you ever sleep?", "Not really, I'm always ready when you need me."),
    ("I'm learning to play the guitar.", "That's exciting. A few minutes of practice every day adds up quickly."),
    ("Who made you?", "I'm a voice assistant built on a speech language model."),
    ("I'm so hungry.", "Sounds like it's time for a snack. Something with protein will keep you going."),
    ("Can you recommend a good book?", "You might enjoy The Martian by Andy Weir, it's funny and gripping."),
    ("I just moved to a new city.", "Exciting! Exploring the neighborhood on foot is a great way to settle in."),
    ("Bye for now.", "Goodbye, talk to you soon!"),
    ("My team won last night.", "Nice, that must have been a fun game to watch."),
    ("I think I'm catching a cold.", "Take it easy, rest up and drink plenty of fluids."),
    ("What do you think about cats?", "Cats are wonderful, independent and endlessly curious."),
    ("Sorry, I misspoke.", "No problem at all, take your time."),
    ("I'm starting a new job on Monday.", "Congratulations on the new job, I hope the first week goes smoothly."),
    ("Is it okay to take a nap?", "A short nap of twenty minutes or so can be really refreshing."),
    ("I'm proud of myself today.", "You should be, it's great to recognize your own progress."),
    ("Can we just chat for a bit?", "Of course, I'm happy to chat. What would you like to talk about?"),
)

TRIVIA = (
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is the largest ocean?", "The Pacific is the largest ocean on Earth."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What gas do plants absorb?", "Plants absorb carbon dioxide from the air."),
    ("How many continents are there?", "There are seven continents."),
    ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level."),
    ("Which planet is known as the red planet?", "Mars is known as the red planet."),
    ("What is the tallest mountain in the world?", "Mount Everest is the tallest mountain above sea level."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What language is spoken in Brazil?", "People in Brazil speak Portuguese."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How many minutes are in an hour?", "There are sixty minutes in an hour."),
    ("What is the fastest land animal?", "The cheetah is the fastest land animal."),
    ("What's the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("How many strings does a violin have?", "A violin has four strings."),
    ("What do bees make?", "Bees make honey and beeswax."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("Who was the first person on the moon?", "Neil Armstrong was the first person to walk on the moon."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("What is the longest river in Africa?", "The Nile is the longest river in Africa."),
    ("What's the main ingredient in guacamole?", "Guacamole is made mainly from avocado."),
    ("How many bones are in the adult human body?", "An adult human has 206 bones."),
    ("What is the smallest prime number?", "The smallest prime number is 2."),
    ("Which animal is known as the king of the jungle?", "The lion is often called the king of the jungle."),
    ("What instrument has 88 keys?", "A standard piano has 88 keys."),
    ("Which is the closest star to Earth?", "The Sun is the closest star to Earth."),
    ("How many players are on a soccer team?", "A soccer team has eleven players on the field."),
    ("What is the hardest natural substance?", "Diamond is the hardest natural substance."),
    ("In which country are the pyramids of Giza?", "The pyramids of Giza are in Egypt."),
    ("What color do you get by mixing blue and yellow?", "Mixing blue and yellow gives you green."),
    ("How many hours are in a day?", "There are twenty-four hours in a day."),
)

COUNTRY_CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Mongolia", "Ulaanbaatar"),
    ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Brazil", "Brasília"), ("Bhutan", "Thimphu"),
    ("Italy", "Rome"), ("Spain", "Madrid"), ("Egypt", "Cairo"), ("Namibia", "Windhoek"),
    ("Germany", "Berlin"), ("Peru", "Lima"), ("Norway", "Oslo"), ("Uruguay", "Montevideo"),
    ("Portugal", "Lisbon"), ("Greece", "Athens"), ("Thailand", "Bangkok"), ("Georgia", "Tbilisi"),
    ("Mexico", "Mexico City"), ("India", "New Delhi"), ("Argentina", "Buenos Aires"), ("Nepal", "Kathmandu"),
    ("Sweden", "Stockholm"), ("Poland", "Warsaw"), ("Turkey", "Ankara"), ("Iceland", "Reykjavik"),
)
CAPITAL_QUESTIONS = (
    "What's the capital of {country}?",
    "Which city is the capital of {country}?",
    "Do you know the capital of {country}?",
    "Tell me the capital of {country}.",
)
CAPITAL_ANSWERS = (
    "The capital of {country} is {capital}.",
    "{capital} is the capital of {country}.",
    "It's {capital}, the capital city of {country}.",
    "{country}'s capital is {capital}.",
)

NUMBERS = tuple(range(2, 50))
ARITHMETIC_OPERATIONS = (("plus", lambda a, b: a + b), ("times", lambda a, b: a * b), ("minus", lambda a, b: a - b))
ARITHMETIC_QUESTIONS = (
    "What's {a} {op} {b}?",
    "Quick math, what is {a} {op} {b}?",
    "Can you work out {a} {op} {b}?",
    "How much is {a} {op} {b}?",
)
ARITHMETIC_ANSWERS = (
    "{a} {op} {b} is {result}.",
    "{a} {op} {b} equals {result}.",
    "That comes to {result}: {a} {op} {b}.",
    "The answer to {a} {op} {b} is {result}.",
)

SPELLING_WORDS = (
    "necessary", "rhythm", "Wednesday", "onomatopoeia", "separate", "definitely", "restaurant", "bureaucracy",
    "believe", "calendar", "environment", "mischievous", "February", "library", "tomorrow", "conscientious",
)
SPELLING_QUESTIONS = (
    "How do you spell {word}?",
    "Can you spell {word} for me?",
    "Spell {word}, please.",
    "What's the spelling of {word}?",
)
SPELLING_ANSWERS = (
    "{word} is spelled {letters}.",
    "It's spelled {letters}.",
    "Sure: {letters}.",
    "You spell {word} like this: {letters}.",
)
