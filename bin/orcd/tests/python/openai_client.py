"""Drives orcd's OpenAI-compatible API with the official `openai` Python client.

Run by `bin/orcd/tests/openai.rs` (fake worker) against an orcd whose worker streams
`t0 t1 t2 ...` (one token per piece); with `--real` the text is not checked, only its shape
(for a real worker and model). Exits non-zero on the first failed check; prints
`ok: N checks` on success.

Usage: openai_client.py BASE_URL MODEL API_KEY [--real]

The streaming chat is the last request that reaches the worker: openai.rs checks what arrived.
"""

import sys

import openai

base_url, model, api_key = sys.argv[1:4]
real = "--real" in sys.argv[4:]
checks = 0


def check(condition, what):
    global checks
    if not condition:
        sys.exit(f"FAILED: {what}")
    checks += 1


def expected_text(tokens):
    return "".join(f"t{i} " for i in range(tokens))


# No retries: a refused request must surface as its exception, not be hidden by a retry.
client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=60)

ids = [m.id for m in client.models.list().data]
check(model in ids, f"/v1/models lists {model}: {ids}")
check(client.models.retrieve(model).id == model, "/v1/models/{model} finds it")

# Legacy completions, streaming and not.
completion = client.completions.create(model=model, prompt="Once upon a time", max_tokens=3)
check(completion.object == "text_completion", f"object: {completion.object}")
if not real:
    check(completion.choices[0].text == expected_text(3), f"text: {completion.choices[0].text!r}")
streamed = "".join(
    c.choices[0].text
    for c in client.completions.create(model=model, prompt="Once", max_tokens=3, stream=True)
    if c.choices
)
if not real:
    check(streamed == expected_text(3), f"streamed completion: {streamed!r}")

messages = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]

# Non-streaming chat.
reply = client.chat.completions.create(
    model=model, messages=messages, max_tokens=4, temperature=0, seed=7, stop=["\n\n"]
)
choice = reply.choices[0]
check(reply.object == "chat.completion", f"object: {reply.object}")
check(choice.message.role == "assistant", f"role: {choice.message.role}")
check(choice.finish_reason in ("stop", "length"), f"finish_reason: {choice.finish_reason}")
check(reply.usage.completion_tokens >= 1, f"usage: {reply.usage}")
check(
    reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens,
    f"usage adds up: {reply.usage}",
)
if not real:
    check(choice.message.content == expected_text(4), f"content: {choice.message.content!r}")
    check(choice.finish_reason == "length", f"finish_reason: {choice.finish_reason}")

# Streaming chat, with the usage chunk at the end.
pieces, reasons, usage, roles = [], [], None, []
stream = client.chat.completions.create(
    model=model,
    messages=messages,
    max_tokens=5,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    check(chunk.object == "chat.completion.chunk", f"chunk object: {chunk.object}")
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.role:
            roles.append(choice.delta.role)
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            reasons.append(choice.finish_reason)
check(roles == ["assistant"], f"the role comes once, first: {roles}")
check(len(reasons) == 1 and reasons[0] in ("stop", "length"), f"one finish_reason: {reasons}")
check(usage is not None and usage.completion_tokens >= 1, f"usage chunk: {usage}")
if not real:
    check("".join(pieces) == expected_text(5), f"streamed text: {''.join(pieces)!r}")
    check(len(pieces) == 5, f"one chunk per token: {pieces}")

# A model nobody serves is OpenAI's 404 `model_not_found`.
try:
    client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=2)
    check(False, "a bad model name must fail")
except openai.NotFoundError as error:
    check(error.status_code == 404, f"status {error.status_code}")
    check(error.code == "model_not_found", f"code {error.code}")

# What orcd cannot do is a 400 naming the field, in `param` too.
try:
    client.chat.completions.create(model=model, messages=messages, max_tokens=2, n=9)
    check(False, "n=9 must fail")
except openai.BadRequestError as error:
    check("`n`" in error.message, f"message names the field: {error.message}")
    check(error.param == "n", f"param names the field: {error.param}")

# A wrong key is refused (only meaningful when orcd has tokens, which the tests configure).
if api_key != "unused":
    intruder = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong-key-0123456789", max_retries=0)
    try:
        intruder.models.list()
        check(False, "a wrong API key must fail")
    except openai.AuthenticationError as error:
        check(error.status_code == 401, f"status {error.status_code}")

print(f"ok: {checks} checks")
