"""What real OpenAI clients rely on, through the official `openai` client against the real
stack and the chat model: structured output validated with `jsonschema`, log-probabilities,
several choices, presence/frequency penalties, logit bias, the context-length error, the
fingerprint and usage details, and OpenAI parameters refused by name.

Run by `tests/openai_features.rs`. Exits non-zero on the first failed check; prints
`ok: N checks` on success.

Usage: openai_features.py BASE_URL MODEL API_KEY CTX_SIZE WORKER_URL
"""

import json
import math
import sys
import urllib.request

import jsonschema
import openai

base_url, model, api_key, ctx_size, worker_url = sys.argv[1:6]
ctx_size = int(ctx_size)
checks = 0


def check(condition, what):
    global checks
    if not condition:
        sys.exit(f"FAILED: {what}")
    checks += 1


def ask(text):
    return [{"role": "user", "content": text}]


client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=120)

# --- Fingerprint and usage details --------------------------------------------------------
reply = client.chat.completions.create(
    model=model, messages=ask("Say hi."), max_tokens=3, temperature=0
)
check(
    reply.system_fingerprint and model in reply.system_fingerprint,
    f"system_fingerprint names the model: {reply.system_fingerprint!r}",
)
check(
    reply.usage.prompt_tokens_details is not None
    and reply.usage.prompt_tokens_details.cached_tokens == 0,
    f"prompt_tokens_details.cached_tokens: {reply.usage}",
)

# --- Structured output ----------------------------------------------------------------------
reply = client.chat.completions.create(
    model=model,
    messages=ask("Describe a cat as a JSON object with its name and age."),
    response_format={"type": "json_object"},
    max_tokens=100,
    temperature=0,
)
content = reply.choices[0].message.content
check(reply.choices[0].finish_reason == "stop", f"json_object ends by itself: {content!r}")
check(isinstance(json.loads(content), dict), f"json_object is one JSON object: {content!r}")

SCHEMAS = [
    (
        "person",
        "Ada Lovelace was born in 1815. Give her name and birth year.",
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "born": {"type": "integer"}},
            "required": ["name", "born"],
            "additionalProperties": False,
        },
    ),
    (
        "nested",
        "Where is the Eiffel Tower? Give the city and the country.",
        {
            "type": "object",
            "properties": {
                "place": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "maxLength": 40},
                        "country": {"type": "string", "maxLength": 40},
                    },
                    "required": ["city", "country"],
                    "additionalProperties": False,
                }
            },
            "required": ["place"],
            "additionalProperties": False,
        },
    ),
    (
        "enum",
        "What colour is the sky on a clear day?",
        {
            "type": "object",
            "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
            "required": ["colour"],
            "additionalProperties": False,
        },
    ),
    (
        "array",
        "List three prime numbers.",
        {
            "type": "object",
            "properties": {
                "primes": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 2,
                    "maxItems": 4,
                },
                "note": {"type": "string", "maxLength": 30},
            },
            "required": ["primes"],
            "additionalProperties": False,
        },
    ),
]
for name, question, schema in SCHEMAS:
    for stream in (False, True):
        kwargs = dict(
            model=model,
            messages=ask(question + " Answer in JSON."),
            response_format={
                "type": "json_schema",
                "json_schema": {"name": name, "strict": True, "schema": schema},
            },
            max_tokens=120,
            temperature=0,
        )
        if stream:
            content = "".join(
                chunk.choices[0].delta.content or ""
                for chunk in client.chat.completions.create(stream=True, **kwargs)
                if chunk.choices
            )
        else:
            content = client.chat.completions.create(**kwargs).choices[0].message.content
        try:
            jsonschema.validate(json.loads(content), schema)
        except (ValueError, jsonschema.ValidationError) as error:
            check(False, f"schema {name} (stream={stream}): {content!r}: {error}")
        check(True, f"schema {name}")

try:
    client.chat.completions.create(
        model=model,
        messages=ask("x"),
        max_tokens=5,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {"type": "object", "not": {"required": ["a"]}}},
        },
    )
    check(False, "a schema keyword the grammar cannot enforce must fail")
except openai.BadRequestError as error:
    check("`not`" in error.message, f"the 400 names the keyword: {error.message}")
    check(error.param == "response_format.json_schema.schema", f"param: {error.param}")

# --- Log-probabilities ----------------------------------------------------------------------
def check_logprobs(entries, top, what):
    check(len(entries) >= 1, f"{what}: logprobs present")
    for entry in entries:
        tops = entry.top_logprobs
        check(len(tops) == top, f"{what}: {top} alternatives: {tops}")
        values = [alt.logprob for alt in tops]
        check(values == sorted(values, reverse=True), f"{what}: sorted: {values}")
        check(all(v <= 0 for v in values), f"{what}: log-probabilities: {values}")
        check(sum(math.exp(v) for v in values) <= 1.0001, f"{what}: a distribution: {values}")
        check(
            entry.token in [alt.token for alt in tops],
            f"{what}: greedy's token {entry.token!r} is among the top: {tops}",
        )
        check(abs(entry.logprob - tops[0].logprob) < 1e-4, f"{what}: greedy picks the top")


reply = client.chat.completions.create(
    model=model, messages=ask("Count from 1 to 5."), max_tokens=6, temperature=0,
    logprobs=True, top_logprobs=3,
)
entries = reply.choices[0].logprobs.content
check_logprobs(entries, 3, "chat")
check(
    len(entries) == reply.usage.completion_tokens,
    f"one entry per token: {len(entries)} vs {reply.usage.completion_tokens}",
)
check("".join(e.token for e in entries) == reply.choices[0].message.content, "tokens spell the text")
streamed = []
for chunk in client.chat.completions.create(
    model=model, messages=ask("Count from 1 to 5."), max_tokens=6, temperature=0,
    logprobs=True, top_logprobs=3, stream=True,
):
    for choice in chunk.choices:
        if choice.logprobs and choice.logprobs.content:
            streamed.extend(choice.logprobs.content)
check_logprobs(streamed, 3, "streamed chat")
check([e.token for e in streamed] == [e.token for e in entries], "streamed = whole")

completion = client.completions.create(
    model=model, prompt="The capital of France is", max_tokens=4, temperature=0, logprobs=2
)
logprobs = completion.choices[0].logprobs
check(len(logprobs.tokens) == len(logprobs.token_logprobs) >= 1, f"completions logprobs: {logprobs}")
check(all(len(top) == 2 for top in logprobs.top_logprobs), f"two alternatives: {logprobs}")
check(logprobs.text_offset[0] == 0, f"offsets: {logprobs.text_offset}")

# --- Several choices --------------------------------------------------------------------------
def cached_prompt_tokens_on_the_worker():
    with urllib.request.urlopen(f"{worker_url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("llorch_worker_prompt_tokens_cached_total "):
                return int(float(line.split()[1]))
    sys.exit("FAILED: the worker's /metrics has no llorch_worker_prompt_tokens_cached_total")


cached_before = cached_prompt_tokens_on_the_worker()
reply = client.chat.completions.create(
    model=model, messages=ask("Write a short poem about the sea."), max_tokens=12,
    temperature=1.0, n=3, seed=11,
)
check([c.index for c in reply.choices] == [0, 1, 2], f"three choices: {reply.choices}")
texts = [c.message.content for c in reply.choices]
check(len(set(texts)) >= 2, f"choices have their own seeds: {texts}")
check(
    len(reply.choices) <= reply.usage.completion_tokens <= 3 * 12,
    f"usage sums the choices: {reply.usage}",
)
# The worker decodes the prompt for one choice; the other two start from a copy of its KV cells.
copied = cached_prompt_tokens_on_the_worker() - cached_before
check(
    copied >= 2 * (reply.usage.prompt_tokens - 1),
    f"the choices share the prompt's KV cells: {copied} tokens copied, usage {reply.usage}",
)
pieces = {}
finished = set()
for chunk in client.chat.completions.create(
    model=model, messages=ask("Name a fruit."), max_tokens=5, temperature=1.0, n=2, seed=3,
    stream=True,
):
    for choice in chunk.choices:
        pieces.setdefault(choice.index, []).append(choice.delta.content or "")
        if choice.finish_reason:
            finished.add(choice.index)
check(sorted(pieces) == [0, 1] and finished == {0, 1}, f"two streamed choices: {pieces} {finished}")

# --- Penalties --------------------------------------------------------------------------------
repeat = ask("Repeat exactly, nothing else: " + " ".join(["hello"] * 12))
plain = client.chat.completions.create(
    model=model, messages=repeat, max_tokens=20, temperature=0
).choices[0].message.content
penalised = client.chat.completions.create(
    model=model, messages=repeat, max_tokens=20, temperature=0,
    frequency_penalty=2.0, presence_penalty=2.0,
).choices[0].message.content
check(penalised != plain, f"penalties change a repetitive answer: {plain!r}")
check(
    penalised.lower().count("hello") < plain.lower().count("hello"),
    f"fewer repetitions: {plain!r} vs {penalised!r}",
)
for bad in ({"presence_penalty": 2.5}, {"frequency_penalty": -3}):
    try:
        client.chat.completions.create(model=model, messages=repeat, max_tokens=2, **bad)
        check(False, f"{bad} must fail")
    except openai.BadRequestError as error:
        check(error.param == next(iter(bad)), f"param names the field: {error.param}")

# --- Logit bias -------------------------------------------------------------------------------
question = ask("What is the capital of France? Answer with one word.")
baseline = client.chat.completions.create(
    model=model, messages=question, max_tokens=3, temperature=0, logprobs=True
)
first = baseline.choices[0].logprobs.content[0]
first_id = first.model_extra["id"]
biased = client.chat.completions.create(
    model=model, messages=question, max_tokens=3, temperature=0, logprobs=True,
    logit_bias={str(first_id): -100},
)
ids = [entry.model_extra["id"] for entry in biased.choices[0].logprobs.content]
check(first_id not in ids, f"token {first_id} ({first.token!r}) is gone: {ids}")
check(
    biased.choices[0].message.content != baseline.choices[0].message.content,
    f"the answer changed: {baseline.choices[0].message.content!r}",
)
for bias, what in (({"abc": 1}, "not a token id"), ({"999999999": 1}, "beyond the vocabulary")):
    try:
        client.chat.completions.create(model=model, messages=question, max_tokens=2, logit_bias=bias)
        check(False, f"logit_bias key {what} must fail")
    except openai.BadRequestError as error:
        check("logit_bias" in error.message, f"{what}: {error.message}")

# --- A prompt that does not fit ---------------------------------------------------------------
long_prompt = ask("word " * (ctx_size + 50))
for stream in (False, True):
    try:
        response = client.chat.completions.create(
            model=model, messages=long_prompt, max_tokens=5, stream=stream
        )
        if stream:
            list(response)
        check(False, f"a prompt beyond the context must fail (stream={stream})")
    except openai.BadRequestError as error:
        check(error.code == "context_length_exceeded", f"code: {error.code} (stream={stream})")
        check(error.param == "messages", f"param: {error.param}")

# --- OpenAI parameters orcd cannot honour are refused by name --------------------------------
for extra in ({"audio": {"voice": "alloy", "format": "wav"}}, {"store": True}, {"n": 9}):
    try:
        client.chat.completions.create(model=model, messages=question, max_tokens=2, **extra)
        check(False, f"{extra} must fail")
    except openai.BadRequestError as error:
        check(error.param == next(iter(extra)), f"param {error.param} for {extra}")

print(f"ok: {checks} checks")
