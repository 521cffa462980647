"""EDU extraction: turns of one session -> short, self-contained, dated statements (rules by default)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Protocol

import pysbd

from memsvc.temporal import WEEKDAYS, TimeCue, date_time_cues, format_day


@dataclass(frozen=True)
class Turn:
    message_id: str  # the client's message id, e.g. "D1:3"
    speaker: str  # display name, e.g. "Caroline"
    role: str  # "user" | "assistant" | "system"
    content: str  # may end with " [shares an image: <caption>]"
    created_at: datetime  # tz-aware UTC


@dataclass(frozen=True)
class Edu:
    text: str  # "<Speaker> (<8 May 2023>): <sentence with I/you resolved and time cues dated>"
    source_message_ids: tuple[str, ...]  # most important first
    speakers: tuple[str, ...]
    occurred_at: datetime | None  # start of the period a resolved time cue names, else the message time
    time_cue: str | None  # the original relative cue ("yesterday") if one was resolved
    entities: tuple[str, ...]  # normalized names and keywords mentioned


class Extractor(Protocol):
    name: str

    def extract(self, turns: Sequence[Turn], participants: Sequence[str]) -> list[Edu]: ...


def make_extractor(
    kind: str,
    *,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    llm_api_key: str | None = None,
    llm_timeout_s: float = 60.0,
    llm_max_concurrency: int = 4,
    llm_tokens_per_minute: int = 200_000,
) -> Extractor:
    """The extractor the settings ask for; "llm" needs a base URL and a model and falls back to rules."""
    if kind == "rules":
        return RulesExtractor()
    if kind == "llm":
        if not llm_base_url or not llm_model:
            raise ValueError("the llm extractor needs llm_base_url and llm_model")
        from memsvc.llm import LlmExtractor  # llm.py imports this module: import late to avoid a cycle

        return LlmExtractor(
            base_url=llm_base_url,
            model=llm_model,
            api_key=llm_api_key,
            timeout_s=llm_timeout_s,
            max_concurrency=llm_max_concurrency,
            tokens_per_minute=llm_tokens_per_minute,
        )
    raise ValueError(f"unknown extractor kind {kind!r} (expected 'rules' or 'llm')")


# --- word lists -------------------------------------------------------------------------------------
# Hand-kept rather than taken from a library: no stop-word list bundled with our dependencies knows chat
# interjections, and the lists decide what counts as small talk, so they must be reviewable here.


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_MONTHS = [date(2000, m, 1).strftime("%B") for m in range(1, 13)]
FUNCTION_WORDS = _words(
    """a an the and or but nor so yet if then than that this these those there here it its it's itself
    i i'm i've i'll i'd me my mine myself you you're you've you'll you'd your yours yourself yourselves
    he him his himself she her hers herself they them their theirs themselves we us our ours ourselves
    who whom whose which what when where why how whatever whenever all any both each every few more most
    other some such no not only own same too very can could will would shall should may might must do
    does did doing done be been being am is are was were have has had having get got gets getting go
    goes going gone went gonna wanna gotta let's lets let of at by for with about against between into
    through during before after above below to from up down in out on off over under again further once
    just also still even ever really quite pretty much many lot lots bit kinda sorta like as because
    while until since though although whether either neither don't doesn't didn't can't couldn't won't
    wouldn't isn't aren't wasn't weren't haven't hasn't hadn't shouldn't that's what's there's here's
    it'll who's how's where's one ones something anything nothing everything someone anyone everyone
    thing things stuff way make made take took come came say said tell told know knew think thought feel
    felt see saw look looking looks want wanted need needed keep kept put give gave now today yesterday
    tomorrow tonight soon later ago already yet always never sometimes often usually maybe perhaps
    probably actually definitely totally absolutely literally seriously honestly basically especially
    right well okay ok oh ah um uh hmm yeah yes yep yup nope sure lol haha hahaha wow whoa omg aw aww yay
    hi hey hello hiya bye goodbye thanks thank thx cool great awesome amazing nice sweet lovely wonderful
    fantastic incredible good glad happy fun sounds sound love loved loving lovin appreciate means mean
    meant agree true exactly congrats congratulations proud luck care catch chat chatting talk talking
    soon new old best better bad hope hoping glad excited exciting interesting cute beautiful awesome
    super another totally inspiring inspired powerful special wish guys man dude buddy friend we're
    we've we'll we'd they're they've they'll they'd he's she's he'd she'd he'll she'll you'd there'll"""
)
# Words that are never a topic by themselves in chat; they never become keywords either.
_NOT_KEYWORDS = (
    FUNCTION_WORDS
    | _words(
        """last next week weekend month year day days weeks months years morning night evening afternoon
    time times able sorry hard easy big small little long short high low full whole real important
    different happy sad tough rough crazy awesome ago able glad kind kinds sort sorts stuff type ran
    continue check chose spoke found given hear help pick turn start stand blend embrace express refresh
    stay thinkin taking making creating working starting happening feeling doing getting going looking
    thinking trying having coming giving keeping expressing thankful grateful keen lucky vital optimistic
    hopeful safe creative rewarding helpful similar thrilled cause live anymore doesn didn isn wasn don
    won aren couldn wouldn shouldn haven hasn two three four five six seven eight nine ten"""
    )
    | frozenset(m.lower() for m in _MONTHS + WEEKDAYS)
)
_NOT_NAMES = frozenset(_MONTHS + WEEKDAYS + ["I", "OK", "Ok", "Okay", "Mr", "Mrs", "Ms", "Dr"])

# Present-tense verbs that get a third-person "-s" once "I"/"you" becomes a name ("Caroline loves").
_AGREEING_VERBS = _words(
    """love like want need think feel hope know enjoy work live plan miss prefer hate go try play paint
    run read write believe remember agree wish mean guess appreciate understand find get make take keep
    use teach study volunteer cook bake swim draw sing dance own spend visit stay care do have look
    start help watch walk listen learn travel hike collect grow wear drive ride call"""
)
_ADVERBS = _words(
    "really also just still totally always never usually actually definitely absolutely sometimes "
    "often truly genuinely honestly kinda"
)


def third_person(verb: str) -> str:
    """'love' -> 'loves', 'try' -> 'tries', 'go' -> 'goes', 'have' -> 'has'."""
    low = verb.lower()
    if low == "have":
        return "has"
    if low == "do":
        return "does"
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if low.endswith("y") and low[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


# --- sentences --------------------------------------------------------------------------------------

_CAPTION = re.compile(r"\s*\[shares an image:\s*(?P<caption>[^\]]*)\]\s*$")
# Text without abbreviations, decimals, ellipses or initials splits safely on terminal punctuation;
# anything else goes to pysbd, which is right more often but ~1 ms per turn (too slow for every turn).
_HARD_TO_SPLIT = re.compile(
    r"\b[A-Za-z]{1,4}\.[A-Za-z0-9]|\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|e\.g|i\.e)\.|\d\.\d|\.\."
)
_SIMPLE_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]*[A-Z0-9])")


@lru_cache(maxsize=1)
def _segmenter() -> pysbd.Segmenter:
    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(text: str) -> list[str]:
    """Sentences of one message, stripped, empty ones dropped; semicolons split only long sides."""
    text = text.strip()
    if not text:
        return []
    parts = _segmenter().segment(text) if _HARD_TO_SPLIT.search(text) else _SIMPLE_SPLIT.split(text)
    out: list[str] = []
    for part in parts:
        for clause in _split_semicolons(part.strip()):
            if clause:
                out.append(clause)
    return out


def _split_semicolons(sentence: str) -> list[str]:
    # A semicolon joins two full clauses; both sides must be long enough to stand alone (>= 4 words).
    pieces = [p.strip() for p in sentence.split(";")]
    if len(pieces) > 1 and all(len(p.split()) >= 4 for p in pieces):
        return [p if p[-1] in ".!?" else p + "." for p in pieces]
    return [sentence]


_WORD = re.compile(r"[A-Za-z][A-Za-z'+&-]*")


def is_small_talk(sentence: str, names: Sequence[str] = ()) -> bool:
    """True when the sentence has no content word: greetings, thanks, praise, 'How have you been?'."""
    skip = {n.lower() for name in names for n in name.split()}
    for word in _WORD.findall(sentence):
        low = word.lower().strip("'-")
        if not low or low in FUNCTION_WORDS or low in skip or low.endswith("n'"):
            continue
        if word[0].isupper() and canonical_name(word.removesuffix("'s"), names) is not None:
            continue
        return False
    return True


# --- names and pronouns -----------------------------------------------------------------------------


def nickname_map(participants: Sequence[str]) -> dict[str, str]:
    """Maps a participant's first name to the full name when the full name has more words."""
    out: dict[str, str] = {}
    for name in participants:
        first = name.split()[0]
        if first != name and sum(p.split()[0] == first for p in participants) == 1:
            out[first] = name
    return out


def canonical_name(token: str, participants: Sequence[str]) -> str | None:
    """The participant a capitalized token names: the full name, its first word, or a prefix nickname
    of >= 3 letters ("Mel" for Melanie) that fits exactly one participant."""
    if token in participants:
        return token
    hits = [p for p in participants if p.split()[0] == token]
    if len(hits) == 1:
        return hits[0]
    if len(token) >= 3 and token.lower() not in FUNCTION_WORDS:
        hits = [p for p in participants if p.split()[0].startswith(token) and p.split()[0] != token]
        if len(hits) == 1:
            return hits[0]
    return None


_NAME_TOKEN = re.compile(r"\b[A-Z][a-z]+\b")


def normalize_names(text: str, participants: Sequence[str]) -> str:
    """Nicknames and first names replaced by the participant's full name."""

    def repl(m: re.Match[str]) -> str:
        return canonical_name(m.group(0), participants) or m.group(0)

    return _NAME_TOKEN.sub(repl, text)


def addressee_of(speaker: str, participants: Sequence[str], text: str) -> str | None:
    """The other participant in a two-person talk; with more, the one participant named in the text."""
    others = [p for p in participants if p != speaker]
    if len(others) == 1:
        return others[0]
    named = [p for p in others if re.search(rf"\b{re.escape(p)}\b", text)]
    return named[0] if len(named) == 1 else None


_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|[^A-Za-z]+")
_CLAUSE_START = _words("and but so that if because when while then")
# "we" is only safe to read as "both of us" where the sentence is about the two talking to each other.
_JOINT = re.compile(r"\b(?:chat|chatted|talk|talked|spoke|met|meet|catch up|caught up|hang out|hung out)\b")
_KEEP_YOU = re.compile(
    r"\b(?:thank you|you know|you never know|see you|you guys|you all|all of you|y'all|you two)\b", re.I
)

_FIRST = {"i'm": "{} is", "i've": "{} has", "i'll": "{} will", "me": "{}", "my": "{}'s", "mine": "{}'s",
          "myself": "{}"}  # fmt: skip
_SECOND = {"you're": "{} is", "you've": "{} has", "you'll": "{} will", "you'd": "{} would",
           "your": "{}'s", "yours": "{}'s", "yourself": "{}"}  # fmt: skip
_WE = {"we": "{}", "us": "{}", "our": "{}'s", "ours": "{}'s", "ourselves": "{}", "we're": "{} are",
       "we've": "{} have", "we'll": "{} will", "we'd": "{} would"}  # fmt: skip
_SUBJ_VERB = {"am": "is", "are": "is", "were": "was", "have": "has", "do": "does", "don't": "doesn't",
              "haven't": "hasn't", "aren't": "isn't", "weren't": "wasn't"}  # fmt: skip
_INVERTED = {"are": "is", "were": "was", "have": "has", "do": "does", "don't": "doesn't", "aren't": "isn't",
             "haven't": "hasn't", "weren't": "wasn't"}  # fmt: skip


def resolve_pronouns(sentence: str, speaker: str, addressee: str | None, both: str | None = None) -> str:
    """I/me/my -> the speaker, you/your -> the addressee (when known), we/us/our -> `both` in
    sentences about the two talking; verbs after a replaced subject agree ("I love" -> "X loves")."""
    tokens = _TOKEN.findall(sentence)
    keep_you = addressee is None or bool(_KEEP_YOU.search(sentence))
    use_we = both is not None and bool(_JOINT.search(sentence.lower()))
    words = [i for i, t in enumerate(tokens) if t[0].isalpha()]
    out = list(tokens)

    def next_word(i: int) -> int | None:
        later = [w for w in words if w > i]
        if later and later[0] == i + 2 and tokens[i + 1] == " ":
            return later[0]
        return None

    def agree(i: int) -> None:
        """Make the verb after a subject at token i third-person singular."""
        j = next_word(i)
        if j is not None and tokens[j].lower() in _ADVERBS:
            j = next_word(j)
        if j is None:
            return
        low = tokens[j].lower()
        if low in _SUBJ_VERB:
            out[j] = _SUBJ_VERB[low]
        elif low in _AGREEING_VERBS and tokens[j].islower():
            out[j] = third_person(tokens[j])

    for pos, i in enumerate(words):
        low = tokens[i].lower()
        if (i and tokens[i - 1].endswith("-")) or (i + 1 < len(tokens) and tokens[i + 1].startswith("-")):
            continue  # "me-time", "you-know-who": part of a compound, not a pronoun
        prev = tokens[words[pos - 1]].lower() if pos else ""
        prev_gap = tokens[i - 1] if i else ""
        clause_start = pos == 0 or prev in _CLAUSE_START or any(c in prev_gap for c in ",.;:!?-—(")
        if tokens[i] in ("I", "i"):
            out[i] = speaker
            agree(i)
        elif tokens[i] in ("I'd", "i'd"):
            j = next_word(i)
            perfect = j is not None and tokens[j].lower() in {"been", "had", "gone", "done", "seen", "never"}
            out[i] = f"{speaker} {'had' if perfect else 'would'}"
        elif low in _FIRST and (low != "me" or tokens[i] == "me"):
            out[i] = _FIRST[low].format(speaker)
        elif not keep_you and addressee and low in _SECOND:
            out[i] = _SECOND[low].format(addressee)
        elif not keep_you and addressee and low == "you":
            if prev in _INVERTED and _starts_question(tokens, words, pos - 1):  # "are you" -> "is Melanie"
                out[words[pos - 1]] = _match_case(_INVERTED[prev], tokens[words[pos - 1]])
            out[i] = addressee
            if clause_start:
                agree(i)
        elif use_we and both and low in _WE:
            out[i] = _WE[low].format(both)
    return "".join(out)


_WH = _words("what where when why how who which")


def _starts_question(tokens: list[str], words: list[int], pos: int) -> bool:
    """The word at words[pos] opens a question: first word, after a wh-word, or after punctuation."""
    if pos <= 0:
        return True
    i = words[pos]
    return tokens[words[pos - 1]].lower() in _WH or any(c in tokens[i - 1] for c in ",;:!?.")


def _match_case(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


# --- entities ---------------------------------------------------------------------------------------

_CAP_SPAN = re.compile(r"[A-Z][A-Za-z0-9'&+-]*(?:\s+(?:of\s+|the\s+|de\s+)?[A-Z][A-Za-z0-9'&+-]*)*")
_KEY_TOKEN = re.compile(r"[a-z][a-z-]*[a-z]|[A-Z][A-Za-z0-9'&+-]*|[^\sA-Za-z]+|\s+")
_KEEP_S = ("ss", "us", "is", "ics", "news", "series")


def singular(word: str) -> str:
    """A crude English singular, enough that 'kids' and 'kid' meet in the graph."""
    if len(word) <= 3 or word.endswith(_KEEP_S) or not word.endswith("s"):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    return word[:-1]


def _is_keyword(word: str) -> bool:
    if len(word) < 3 or word in _NOT_KEYWORDS or singular(word) in _NOT_KEYWORDS:
        return False
    # -ly adverbs and -ed verbs/adjectives are never the topic ("really", "started", "excited").
    return not word.endswith("ly") and not (word.endswith("ed") and len(word) > 4)


def capitalized_mid_sentence(texts: Sequence[str]) -> set[str]:
    """Words written capitalized somewhere other than at a sentence start: names, not sentence case."""
    out: set[str] = set()
    for text in texts:
        for sentence in re.split(r"[.!?]\s+", text):
            for m in re.finditer(r"(?<=[\s,;:(\"'-])[A-Z][A-Za-z0-9&+-]*", sentence):
                out.add(m.group(0))
    return out


def entities_of(text: str, participants: Sequence[str], names_seen: set[str]) -> list[str]:
    """Names (capitalized spans, participants by full name) then keyword phrases (runs of <= 3 content
    words, head singularized), in order of first mention, without duplicates."""
    found: list[str] = []
    for m in _CAP_SPAN.finditer(text):
        words = [w.removesuffix("'s") for w in m.group(0).split()]
        while words and (words[0].lower() in FUNCTION_WORDS or words[0] in _NOT_NAMES):
            words.pop(0)
        while words and (words[-1].lower() in FUNCTION_WORDS or words[-1] in _NOT_NAMES):
            words.pop()
        if not words:
            continue
        span = " ".join(words)
        at_start = not text[: m.start()].strip(" \"'(")
        if len(words) == 1:
            canon = canonical_name(span, participants)
            if canon is not None:
                span = canon
            elif at_start and span not in names_seen and not span.isupper():
                continue  # sentence case, not a name; the word may still be a keyword below
        found.append(span)
    run: list[str] = []
    first_word = True
    for token in [*_KEY_TOKEN.findall(text), "."]:
        if token == " ":
            continue
        low = token.lower()
        bare = token.removesuffix("'s")
        sentence_case = (
            first_word
            and token[0].isupper()
            and bare not in names_seen
            and canonical_name(bare, participants) is None
        )
        if token[0].isalpha():
            first_word = False
        if token[0].isalpha() and (token.islower() or sentence_case) and _is_keyword(low):
            run.append(low)
            continue
        while len(run) > 1 and run[0].endswith("ing"):
            run.pop(0)  # "playing violin" -> "violin": the object is the topic, not the activity verb
        if len(run) > 2 and run[-1].endswith("ing"):
            run.pop()  # "bicycle leaning (on a fence)": a participle after the noun, not part of its name
        if run:
            phrase = run[-3:]
            found.append(" ".join([*phrase[:-1], singular(phrase[-1])]))
            run = []
    return list(dict.fromkeys(found))


# --- the rules extractor ----------------------------------------------------------------------------


def split_caption(content: str) -> tuple[str, str | None]:
    """The message text and the image caption it carries, if any."""
    m = _CAPTION.search(content)
    if m is None:
        return content, None
    return content[: m.start()], m.group("caption").strip() or None


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _start_of(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# An answer this short only makes sense with the question before it ("Yes, twice!"), when it opens like
# an answer or is too short to hold a statement of its own.
SHORT_ANSWER_WORDS = 6
_ANSWER_OPENERS = _words(
    "yes yeah yep yup no nope nah sure definitely absolutely not never maybe probably only just twice once "
    "always sometimes totally exactly"
)


def _bare_answer(body: str) -> bool:
    words = body.split()
    opener = words[0].lower().strip(",.!?") if words else ""
    return 0 < len(words) <= SHORT_ANSWER_WORDS and (opener in _ANSWER_OPENERS or len(words) <= 3)


class RulesExtractor:
    """Deterministic and offline: sentence units "Speaker (date): sentence" with I/you resolved to names,
    relative time cues dated, small talk skipped, image captions kept as their own EDU."""

    name = "rules"

    def extract(self, turns: Sequence[Turn], participants: Sequence[str]) -> list[Edu]:
        people = list(dict.fromkeys([*participants, *(t.speaker for t in turns)]))
        bodies = [split_caption(t.content.replace("\u2019", "'"))[0] for t in turns]
        names_seen = capitalized_mid_sentence(bodies)
        edus: list[Edu] = []
        for idx, turn in enumerate(turns):
            body, caption = split_caption(turn.content.replace("\u2019", "'"))
            question = self._open_question(turns[idx - 1], people) if idx else None
            if question is not None and turn.speaker != turns[idx - 1].speaker and _bare_answer(body):
                edus.append(self._answer(turn, body.strip(), turns[idx - 1], question, people, names_seen))
            else:
                for sentence in split_sentences(body):
                    if not is_small_talk(sentence, people):
                        edus.append(self._edu(turn, sentence, people, names_seen))
            if caption:
                day = format_day(_utc_day(turn.created_at))
                edus.append(
                    Edu(
                        text=f"{turn.speaker} ({day}): {turn.speaker} shared an image: {caption}",
                        source_message_ids=(turn.message_id,),
                        speakers=(turn.speaker,),
                        occurred_at=turn.created_at,
                        time_cue=None,
                        entities=tuple([turn.speaker, *entities_of(caption, people, names_seen)]),
                    )
                )
        return _dedupe(_prefer_full_names(edus))

    def _open_question(self, turn: Turn, people: Sequence[str]) -> str | None:
        """The last sentence of a turn when it is a question worth answering."""
        sentences = split_sentences(split_caption(turn.content.replace("\u2019", "'"))[0])
        if sentences and sentences[-1].rstrip().endswith("?") and not is_small_talk(sentences[-1], people):
            return sentences[-1]
        return None

    def _resolved(self, turn: Turn, sentence: str, people: Sequence[str]) -> tuple[str, list[TimeCue]]:
        addressee = addressee_of(turn.speaker, people, sentence)
        both = f"{turn.speaker} and {addressee}" if addressee and len(people) == 2 else None
        text = normalize_names(sentence, people)
        text, cues = date_time_cues(text, _utc_day(turn.created_at))
        return resolve_pronouns(text, turn.speaker, addressee, both), cues

    def _edu(self, turn: Turn, sentence: str, people: Sequence[str], names_seen: set[str]) -> Edu:
        text, cues = self._resolved(turn, sentence, people)
        return Edu(
            text=f"{turn.speaker} ({format_day(_utc_day(turn.created_at))}): {text}",
            source_message_ids=(turn.message_id,),
            speakers=(turn.speaker,),
            occurred_at=_start_of(cues[0].day) if cues else turn.created_at,
            time_cue=cues[0].cue if cues else None,
            entities=tuple(entities_of(text, people, names_seen)),
        )

    def _answer(
        self, turn: Turn, body: str, asker: Turn, question: str, people: Sequence[str], names_seen: set[str]
    ) -> Edu:
        answer, cues = self._resolved(turn, body, people)
        asked, asked_cues = self._resolved(asker, question, people)
        cues = cues or asked_cues
        return Edu(
            text=f"{turn.speaker} ({format_day(_utc_day(turn.created_at))}): {answer} "
            f'(answering {asker.speaker}: "{asked}")',
            source_message_ids=(turn.message_id, asker.message_id),
            speakers=(turn.speaker, asker.speaker),
            occurred_at=_start_of(cues[0].day) if cues else turn.created_at,
            time_cue=cues[0].cue if cues else None,
            entities=tuple(
                dict.fromkeys(
                    [*entities_of(answer, people, names_seen), *entities_of(asked, people, names_seen)]
                )
            ),
        )


def _prefer_full_names(edus: list[Edu]) -> list[Edu]:
    """'John' -> 'John Smith' in entities when the batch names exactly one longer 'John ...'."""
    names = {e for edu in edus for e in edu.entities if e[:1].isupper()}
    longer = {n: [m for m in names if m.startswith(n + " ")] for n in names if " " not in n}
    upgrade = {n: ms[0] for n, ms in longer.items() if len(ms) == 1}
    if not upgrade:
        return edus
    return [
        Edu(e.text, e.source_message_ids, e.speakers, e.occurred_at, e.time_cue,
            tuple(dict.fromkeys(upgrade.get(x, x) for x in e.entities)))
        for e in edus
    ]  # fmt: skip


def _dedupe(edus: list[Edu]) -> list[Edu]:
    """One EDU per text; a repeated statement keeps every turn it came from."""
    by_text: dict[str, Edu] = {}
    for edu in edus:
        seen = by_text.get(edu.text)
        if seen is None:
            by_text[edu.text] = edu
        else:
            ids = tuple(dict.fromkeys([*seen.source_message_ids, *edu.source_message_ids]))
            speakers = tuple(dict.fromkeys([*seen.speakers, *edu.speakers]))
            by_text[edu.text] = Edu(edu.text, ids, speakers, seen.occurred_at, seen.time_cue, seen.entities)
    return list(by_text.values())
