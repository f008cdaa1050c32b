"""OpenAI's Responses API through the official `openai` client against the real stack and the
chat model: a plain answer, a streamed one (the event sequence, the deltas adding up to the
answer), a `json_schema` text format whose answer validates, and a weather-tool round trip
(a `function_call`, then its `function_call_output` chained with `previous_response_id`);
stored responses are retrieved and deleted, `store: false` ones are not kept, and refused
fields are named in OpenAI's error shape.

Run by `tests/agents_api.rs`. Exits non-zero on the first failed check; prints `ok: N checks`
on success.

Usage: openai_responses.py BASE_URL MODEL API_KEY
"""

import json
import sys

import jsonschema
import openai

from checks import check, done

base_url, model, api_key = sys.argv[1:4]
client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=120)

# --- Plain ----------------------------------------------------------------------------------
reply = client.responses.create(
    model=model,
    instructions="You are terse.",
    input="Say hello in one word.",
    max_output_tokens=16,
    temperature=0,
)
check(reply.object == "response", f"object: {reply.object}")
check(reply.id.startswith("resp_"), f"id: {reply.id}")
check(reply.status in ("completed", "incomplete"), f"status: {reply.status}")
check(reply.model == model, f"model: {reply.model}")
check(reply.output_text.strip() != "", f"output_text: {reply.output_text!r}")
check(reply.output[0].type == "message", f"output: {reply.output}")
check(reply.output[0].role == "assistant", f"role: {reply.output[0]}")
usage = reply.usage
check(usage.input_tokens > 0 and usage.output_tokens >= 1, f"usage: {usage}")
check(usage.total_tokens == usage.input_tokens + usage.output_tokens, f"usage adds up: {usage}")
check(usage.input_tokens_details.cached_tokens >= 0, f"cached tokens: {usage}")

# --- Streamed -------------------------------------------------------------------------------
types, deltas, final, numbers = [], "", None, []
for event in client.responses.create(
    model=model, input="Count from 1 to 5.", max_output_tokens=24, temperature=0, stream=True
):
    types.append(event.type)
    numbers.append(event.sequence_number)
    if event.type == "response.output_text.delta":
        deltas += event.delta
    if event.type in ("response.completed", "response.incomplete"):
        final = event.response
check(types[:2] == ["response.created", "response.in_progress"], f"opening: {types[:3]}")
for expected in (
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
):
    check(expected in types, f"{expected} in {types}")
check(types[-1] in ("response.completed", "response.incomplete"), f"the end: {types[-1]}")
check(numbers == list(range(len(numbers))), f"sequence numbers count up: {numbers}")
check(final is not None and final.output_text == deltas, f"deltas add up: {deltas!r} {final}")
check(final.usage.output_tokens >= 1, f"streamed usage: {final.usage}")

# --- json_schema text format ----------------------------------------------------------------
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
structured = client.responses.create(
    model=model,
    input="Invent a person and give their name and age.",
    text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}},
    max_output_tokens=80,
    temperature=0,
)
person = json.loads(structured.output_text)
jsonschema.validate(person, PERSON)
check(structured.text.format.type == "json_schema", f"the format is echoed: {structured.text}")

# --- Tool round trip with previous_response_id ----------------------------------------------
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name"}},
        "required": ["city"],
    },
}
asked = client.responses.create(
    model=model,
    input="What is the weather like in Paris right now?",
    tools=[WEATHER],
    max_output_tokens=100,
    temperature=0,
)
calls = [item for item in asked.output if item.type == "function_call"]
check(len(calls) == 1, f"one call: {asked.output}")
call = calls[0]
check(call.name == "get_weather", f"called: {call}")
check(call.call_id.startswith("call_"), f"call_id: {call}")
arguments = json.loads(call.arguments)
jsonschema.validate(arguments, WEATHER["parameters"])
check("paris" in arguments["city"].lower(), f"the city asked about: {arguments}")

answered = client.responses.create(
    model=model,
    previous_response_id=asked.id,
    input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "22 degrees Celsius and sunny"},
        # The 0.5B model answers a bare tool result by repeating its call; a short user turn
        # after the result gets the plain answer (as in openai_tools.py).
        {"role": "user", "content": "So, what is the weather in Paris? Answer in one sentence."},
    ],
    tools=[WEATHER],
    max_output_tokens=60,
    temperature=0,
)
check(answered.previous_response_id == asked.id, f"chained: {answered.previous_response_id}")
check(not [i for i in answered.output if i.type == "function_call"], f"no new call: {answered.output}")
check("22" in answered.output_text, f"the answer uses the tool's result: {answered.output_text!r}")

# Streamed, the call arrives as argument deltas.
arguments_streamed, added = "", []
for event in client.responses.create(
    model=model,
    input="What is the weather like in Paris right now?",
    tools=[WEATHER],
    tool_choice={"type": "function", "name": "get_weather"},
    max_output_tokens=100,
    temperature=0,
    stream=True,
):
    if event.type == "response.output_item.added":
        added.append(event.item.type)
    if event.type == "response.function_call_arguments.delta":
        arguments_streamed += event.delta
check(added == ["function_call"], f"one function_call item: {added}")
jsonschema.validate(json.loads(arguments_streamed), WEATHER["parameters"])

# --- Stored responses -----------------------------------------------------------------------
fetched = client.responses.retrieve(asked.id)
check(fetched.id == asked.id and fetched.output[0].type == "function_call", f"retrieved: {fetched}")
deleted = client.responses.delete(asked.id)
try:
    client.responses.retrieve(asked.id)
    check(False, "a deleted response is gone")
except openai.NotFoundError:
    check(True, "deleted")

unstored = client.responses.create(model=model, input="Hi", max_output_tokens=4, store=False)
check(unstored.store is False, f"store echoed: {unstored.store}")
try:
    client.responses.retrieve(unstored.id)
    check(False, "a `store: false` response is not kept")
except openai.NotFoundError:
    check(True, "not kept")
try:
    client.responses.create(model=model, input="Hi", max_output_tokens=4, previous_response_id=unstored.id)
    check(False, "continuing an unkept response is refused")
except openai.BadRequestError as error:
    check(error.param == "previous_response_id", f"param: {error.param}")

# --- Refusals name the field ----------------------------------------------------------------
for extra, field in [
    ({"frobnicate": 1}, "frobnicate"),
    ({"reasoning": {"effort": "high"}}, "reasoning"),
    ({"temperature": "hot"}, "temperature"),
]:
    try:
        client.responses.create(model=model, input="Hi", max_output_tokens=4, extra_body=extra)
        check(False, f"{extra} is refused")
    except openai.BadRequestError as error:
        check(error.param == field, f"{extra}: param {error.param!r}")
        check(error.type == "invalid_request_error", f"{extra}: type {error.type!r}")

done()
