"""Tool calling through the official `openai` client against the real stack and the chat model
(Qwen2.5 Coder Instruct, whose template writes calls as `<tool_call>{json}</tool_call>`): a
weather-tool round trip (call, `role: tool` result, final text answer), streamed and not;
`tool_choice: "none"` answers in text; a named function and `required` always yield a call whose
arguments validate against the tool's schema; bad tool requests are refused by field.

Run by `tests/openai_tools.rs`. Exits non-zero on the first failed check; prints `ok: N checks`
on success.

Usage: openai_tools.py BASE_URL MODEL API_KEY
"""

import json
import sys

import jsonschema
import openai

base_url, model, api_key = sys.argv[1:4]
checks = 0


def check(condition, what):
    global checks
    if not condition:
        sys.exit(f"FAILED: {what}")
    checks += 1


client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=120)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {
                "zone": {"type": "string", "enum": ["UTC", "CET", "PST"]},
                "seconds": {"type": "boolean"},
            },
            "required": ["zone", "seconds"],
        },
    },
}
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in [WEATHER, TIME]}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
RESULT = "22 degrees Celsius and sunny"
# The 0.5B model answers a bare tool result by repeating its call as JSON; a short user turn after
# the result gets the plain answer a larger model gives without one.
NUDGE = {"role": "user", "content": "So, what is the weather in Paris? Answer in one sentence."}


def valid_call(call, name=None):
    """A call to an offered tool (`name` if given) whose arguments validate."""
    check(call.type == "function", f"call type: {call}")
    check(call.id.startswith("call_"), f"call id: {call.id!r}")
    if name is not None:
        check(call.function.name == name, f"called {call.function.name!r}, not {name!r}")
    check(call.function.name in SCHEMAS, f"called an offered tool: {call.function.name!r}")
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    return arguments


def streamed(**request):
    """A streamed answer, reassembled as OpenAI clients do: content, tool calls by index."""
    content, calls, finish = "", {}, None
    streamed.fragments = 0
    for chunk in client.chat.completions.create(stream=True, **request):
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            for call in delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
                if call.id:
                    check(entry["id"] is None, f"the id comes once per call: {call}")
                    entry["id"] = call.id
                    check(call.type == "function", f"the opening chunk has the type: {call}")
                    check(call.function.name, f"the opening chunk names the function: {call}")
                if call.function and call.function.name:
                    entry["name"] = call.function.name
                if call.function and call.function.arguments:
                    entry["arguments"] += call.function.arguments
                    streamed.fragments += 1
            finish = choice.finish_reason or finish
    return content, [calls[index] for index in sorted(calls)], finish


# --- Round trip, whole answers --------------------------------------------------------------
reply = client.chat.completions.create(
    model=model, messages=QUESTION, tools=[WEATHER], max_tokens=100, temperature=0
)
choice = reply.choices[0]
check(choice.finish_reason == "tool_calls", f"finish_reason: {choice}")
check(choice.message.content is None, f"content is null beside calls: {choice.message}")
check(len(choice.message.tool_calls) == 1, f"one call: {choice.message.tool_calls}")
call = choice.message.tool_calls[0]
arguments = valid_call(call, "get_weather")
check("paris" in arguments["city"].lower(), f"the city asked about: {arguments}")

history = QUESTION + [
    choice.message,
    {"role": "tool", "tool_call_id": call.id, "content": RESULT},
    NUDGE,
]
reply = client.chat.completions.create(
    model=model, messages=history, tools=[WEATHER], max_tokens=60, temperature=0
)
answer = reply.choices[0]
check(answer.finish_reason == "stop", f"the final answer ends by itself: {answer}")
check(not answer.message.tool_calls, f"no further call: {answer.message}")
check("22" in (answer.message.content or ""), f"the answer uses the tool's result: {answer}")

# --- Round trip, streamed -------------------------------------------------------------------
content, calls, finish = streamed(
    model=model, messages=QUESTION, tools=[WEATHER], max_tokens=100, temperature=0
)
check(finish == "tool_calls", f"streamed finish_reason: {finish}")
check(content.strip() == "", f"no content beside the call: {content!r}")
check(len(calls) == 1 and calls[0]["name"] == "get_weather", f"streamed calls: {calls}")
streamed_arguments = json.loads(calls[0]["arguments"])
check(streamed_arguments == arguments, f"streamed arguments {streamed_arguments} == {arguments}")
check(streamed.fragments > 1, f"arguments stream as generated: {streamed.fragments} fragments")

history = QUESTION + [
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": calls[0]["id"],
                "type": "function",
                "function": {"name": calls[0]["name"], "arguments": calls[0]["arguments"]},
            }
        ],
    },
    {"role": "tool", "tool_call_id": calls[0]["id"], "content": RESULT},
    NUDGE,
]
content, calls, finish = streamed(
    model=model, messages=history, tools=[WEATHER], max_tokens=60, temperature=0
)
check(finish == "stop" and not calls, f"streamed final answer: {finish} {calls}")
check("22" in content, f"the streamed answer uses the tool's result: {content!r}")

# --- tool_choice: none ----------------------------------------------------------------------
reply = client.chat.completions.create(
    model=model,
    messages=QUESTION,
    tools=[WEATHER],
    tool_choice="none",
    max_tokens=20,
    temperature=0,
)
choice = reply.choices[0]
check(not choice.message.tool_calls, f"`none` makes no call: {choice.message}")
check(choice.finish_reason in ("stop", "length"), f"`none` finish_reason: {choice}")
check(choice.message.content and "<tool_call>" not in choice.message.content, f"text: {choice}")

# --- A named function, even when the question is about something else -----------------------
for stream in (False, True):
    request = dict(
        model=model,
        messages=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=60,
        temperature=0,
    )
    if stream:
        content, calls, finish = streamed(**request)
        check(finish == "tool_calls" and len(calls) == 1, f"streamed named: {finish} {calls}")
        check(calls[0]["name"] == "get_time", f"streamed named call: {calls}")
        check(streamed.fragments > 1, f"forced arguments stream: {streamed.fragments} fragments")
        jsonschema.validate(json.loads(calls[0]["arguments"]), SCHEMAS["get_time"])
    else:
        choice = client.chat.completions.create(**request).choices[0]
        check(choice.finish_reason == "tool_calls", f"named finish_reason: {choice}")
        check(len(choice.message.tool_calls) == 1, f"named: one call: {choice.message}")
        valid_call(choice.message.tool_calls[0], "get_time")

# --- required, with an unrelated question; one call when parallel calls are off -------------
choice = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Tell me a joke."}],
    tools=[WEATHER, TIME],
    tool_choice="required",
    parallel_tool_calls=False,
    max_tokens=60,
    temperature=0,
).choices[0]
check(choice.finish_reason == "tool_calls", f"required finish_reason: {choice}")
check(len(choice.message.tool_calls) == 1, f"required: exactly one call: {choice.message}")
valid_call(choice.message.tool_calls[0])

# --- Refusals name the field ----------------------------------------------------------------
for extra, param in [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}},
     "tool_choice"),
]:
    try:
        client.chat.completions.create(model=model, messages=QUESTION, max_tokens=5, **extra)
        check(False, f"{extra} was accepted")
    except openai.BadRequestError as error:
        check(error.status_code == 400, f"{extra}: status {error.status_code}")
        check(error.param == param, f"{extra}: param {error.param!r}, expected {param!r}")

print(f"ok: {checks} checks")
