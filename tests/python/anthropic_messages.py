"""Anthropic's Messages API through the official `anthropic` client against the real stack and
the chat model: a plain answer, a streamed one (the event sequence, the text adding up), a
weather-tool round trip (`tool_use`, then `tool_result`), `messages.count_tokens` agreeing with
the `usage.input_tokens` of the same request, and errors in Anthropic's shape (a refused field
named, a wrong key).

Run by `tests/agents_api.rs`. Exits non-zero on the first failed check; prints `ok: N checks`
on success.

Usage: anthropic_messages.py BASE_URL MODEL API_KEY
"""

import sys

import anthropic
import jsonschema

from checks import check, done

base_url, model, api_key = sys.argv[1:4]
# The client sends the key as `x-api-key` and an `anthropic-version` header.
client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
HELLO = [{"role": "user", "content": "Say hello in one word."}]
# Greedy answers; this client version has no `temperature` argument, so it goes in the body.
GREEDY = {"temperature": 0}

# --- Plain ----------------------------------------------------------------------------------
reply = client.messages.create(
    model=model, max_tokens=16, system="You are terse.", messages=HELLO, extra_body=GREEDY
)
check(reply.type == "message" and reply.role == "assistant", f"reply: {reply}")
check(reply.id.startswith("msg_"), f"id: {reply.id}")
check(reply.model == model, f"model: {reply.model}")
check(reply.content[0].type == "text" and reply.content[0].text.strip(), f"content: {reply.content}")
check(reply.stop_reason in ("end_turn", "max_tokens"), f"stop_reason: {reply.stop_reason}")
check(reply.usage.input_tokens > 0 and reply.usage.output_tokens >= 1, f"usage: {reply.usage}")

# count_tokens counts what the same request's usage reports.
counted = client.messages.count_tokens(model=model, system="You are terse.", messages=HELLO)
check(counted.input_tokens == reply.usage.input_tokens, f"count {counted} vs usage {reply.usage}")

# --- Streamed -------------------------------------------------------------------------------
with client.messages.stream(
    model=model, max_tokens=24, messages=[{"role": "user", "content": "Count from 1 to 5."}], extra_body=GREEDY
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
check(text.strip() != "", f"streamed text: {text!r}")
check(final.content[0].text == text, f"the final message holds the streamed text: {final}")
check(final.usage.input_tokens > 0 and final.usage.output_tokens >= 1, f"streamed usage: {final.usage}")

types = [
    event.type
    for event in client.messages.create(
        model=model, max_tokens=8, messages=HELLO, extra_body=GREEDY, stream=True
    )
]
check(types[0] == "message_start", f"first: {types}")
check(types[-2:] == ["message_delta", "message_stop"], f"last: {types}")
for expected in ("content_block_start", "content_block_delta", "content_block_stop"):
    check(expected in types, f"{expected} in {types}")

# --- Tool round trip ------------------------------------------------------------------------
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name"}},
        "required": ["city"],
    },
}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
asked = client.messages.create(
    model=model, max_tokens=100, tools=[WEATHER], messages=QUESTION, extra_body=GREEDY
)
check(asked.stop_reason == "tool_use", f"stop_reason: {asked}")
uses = [block for block in asked.content if block.type == "tool_use"]
check(len(uses) == 1, f"one tool_use: {asked.content}")
use = uses[0]
check(use.name == "get_weather" and use.id.startswith("toolu_"), f"tool_use: {use}")
jsonschema.validate(use.input, WEATHER["input_schema"])
check("paris" in use.input["city"].lower(), f"the city asked about: {use.input}")

history = QUESTION + [
    {"role": "assistant", "content": asked.content},
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": use.id, "content": "22 degrees Celsius and sunny"},
            # As in openai_tools.py: the 0.5B model needs a short user turn after the result.
            {"type": "text", "text": "So, what is the weather in Paris? Answer in one sentence."},
        ],
    },
]
answered = client.messages.create(
    model=model, max_tokens=60, tools=[WEATHER], messages=history, extra_body=GREEDY
)
check(answered.stop_reason == "end_turn", f"the answer ends by itself: {answered}")
answer = "".join(block.text for block in answered.content if block.type == "text")
check("22" in answer, f"the answer uses the tool's result: {answer!r}")

counted = client.messages.count_tokens(model=model, tools=[WEATHER], messages=history)
check(counted.input_tokens == answered.usage.input_tokens, f"count {counted} vs {answered.usage}")

# Streamed, the forced call arrives as input_json deltas.
with client.messages.stream(
    model=model,
    max_tokens=100,
    tools=[WEATHER],
    tool_choice={"type": "tool", "name": "get_weather"},
    messages=QUESTION,
    extra_body=GREEDY,
) as stream:
    final = stream.get_final_message()
uses = [block for block in final.content if block.type == "tool_use"]
check(len(uses) == 1, f"one streamed tool_use: {final.content}")
jsonschema.validate(uses[0].input, WEATHER["input_schema"])

# --- Errors in Anthropic's shape ------------------------------------------------------------
try:
    client.messages.create(model=model, max_tokens=8, messages=HELLO, extra_body={"frobnicate": 1})
    check(False, "an unknown field is refused")
except anthropic.BadRequestError as error:
    check(error.body["type"] == "error", f"shape: {error.body}")
    check(error.body["error"]["type"] == "invalid_request_error", f"type: {error.body}")
    check("`frobnicate`" in error.body["error"]["message"], f"names the field: {error.body}")
try:
    anthropic.Anthropic(base_url=base_url, api_key="not-a-valid-key-0000", max_retries=0).messages.create(
        model=model, max_tokens=8, messages=HELLO
    )
    check(False, "a wrong key is refused")
except anthropic.AuthenticationError as error:
    check(error.body["error"]["type"] == "authentication_error", f"type: {error.body}")

done()
