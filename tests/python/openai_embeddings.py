"""`/v1/embeddings` through the official `openai` client against the real stack: vectors as long
as the model's `embedding_length` (read from the GGUF file itself), of unit length, identical
for identical input and different for different input, a list answered one vector per item in
order, float and base64 (the client's default) agreeing, `usage`, and the refusals: `dimensions`,
a model nobody serves (404), a model served without embeddings (400 naming `model`), an input
longer than one decode (`context_length_exceeded`), empty and token-array input.

Run by `tests/openai_embeddings.rs`. Exits non-zero on the first failed check; prints
`ok: N checks` on success.

Usage: openai_embeddings.py BASE_URL MODEL PLAIN_MODEL API_KEY GGUF_PATH CTX_SIZE
"""

import math
import struct
import sys

import openai

base_url, model, plain_model, api_key, gguf_path, ctx_size = sys.argv[1:7]
ctx_size = int(ctx_size)
checks = 0


def check(condition, what):
    global checks
    if not condition:
        sys.exit(f"FAILED: {what}")
    checks += 1


def gguf_embedding_length(path):
    """`<general.architecture>.embedding_length` from a GGUF file's metadata (format v2/v3)."""
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    with open(path, "rb") as f:

        def read(fmt):
            size = struct.calcsize(fmt)
            return struct.unpack(fmt, f.read(size))[0]

        def string():
            return f.read(read("<Q")).decode("utf-8", "replace")

        def value(kind):
            if kind == 8:
                return string()
            if kind == 9:
                item_kind, count = read("<I"), read("<Q")
                return [value(item_kind) for _ in range(count)]
            return read(scalar[kind])

        if f.read(4) != b"GGUF":
            sys.exit(f"FAILED: {path} is not a GGUF file")
        read("<I")  # version
        read("<Q")  # tensor count
        metadata = {}
        for _ in range(read("<Q")):
            key = string()
            metadata[key] = value(read("<I"))
            arch = metadata.get("general.architecture")
            if arch and f"{arch}.embedding_length" in metadata:
                return metadata[f"{arch}.embedding_length"]
    sys.exit(f"FAILED: no embedding_length in {path}")


def norm(vector):
    return math.sqrt(sum(x * x for x in vector))


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))


def close(a, b, tolerance=1e-5):
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) <= tolerance


def refused(error_class, what, **request):
    try:
        client.embeddings.create(**request)
    except error_class as error:
        return error
    sys.exit(f"FAILED: {what} was not refused with {error_class.__name__}")


client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=120)
n_embd = gguf_embedding_length(gguf_path)

# --- One string ---------------------------------------------------------------------------------
first = client.embeddings.create(model=model, input="The cat sat on the mat.", encoding_format="float")
check(first.object == "list" and first.model == model, f"list of the model: {first.object} {first.model}")
check(len(first.data) == 1 and first.data[0].index == 0, f"one item at index 0: {first.data}")
cat = first.data[0].embedding
check(len(cat) == n_embd, f"dimension {len(cat)} is the model's embedding_length {n_embd}")
check(abs(norm(cat) - 1.0) < 1e-4, f"normalised: |v| = {norm(cat)}")
check(first.usage.prompt_tokens > 0, f"usage.prompt_tokens: {first.usage}")
check(first.usage.total_tokens == first.usage.prompt_tokens, f"usage.total_tokens: {first.usage}")

# --- Identical input, identical vector; different input, different vector -----------------------
again = client.embeddings.create(model=model, input="The cat sat on the mat.", encoding_format="float")
check(again.data[0].embedding == cat, "the same input gives the identical vector")
other = client.embeddings.create(model=model, input="Quarterly revenue grew by four percent.", encoding_format="float")
dog = other.data[0].embedding
check(len(dog) == n_embd, "every vector has the model's dimension")
check(dog != cat and cosine(cat, dog) < 0.9999, f"different input, different vector (cosine {cosine(cat, dog)})")

# --- The client's default: base64, decoded by the client --------------------------------------
default = client.embeddings.create(model=model, input="The cat sat on the mat.")
check(close(list(default.data[0].embedding), cat), "base64 (the client's default) decodes to the float vector")

# --- A list: one vector per item, in order ----------------------------------------------------------
texts = ["Quarterly revenue grew by four percent.", "The cat sat on the mat.", "Quarterly revenue grew by four percent."]
listed = client.embeddings.create(model=model, input=texts, encoding_format="float")
check([item.index for item in listed.data] == [0, 1, 2], f"indexes in order: {[item.index for item in listed.data]}")
vectors = [item.embedding for item in listed.data]
check(all(len(vector) == n_embd for vector in vectors), "every listed vector has the model's dimension")
check(vectors[0] == vectors[2], "identical items in one list get the identical vector")
check(vectors[1] == cat and vectors[0] == dog, "each item's vector is that text's alone, in order")
check(listed.usage.prompt_tokens > first.usage.prompt_tokens, f"usage counts every item: {listed.usage}")

# --- Refusals, each naming what is wrong --------------------------------------------------------
error = refused(openai.BadRequestError, "`dimensions`", model=model, input="a", dimensions=8)
check(error.body.get("param") == "dimensions", f"dimensions param: {error.body}")

error = refused(openai.NotFoundError, "an unknown model", model="no-such-model", input="a")
check(error.body.get("code") == "model_not_found", f"model_not_found: {error.body}")

error = refused(openai.BadRequestError, "a model served without embeddings", model=plain_model, input="a")
check(error.body.get("param") == "model", f"names `model`: {error.body}")
check("--embeddings" in error.body.get("message", ""), f"hints at --embeddings: {error.body}")

error = refused(openai.BadRequestError, "an input longer than one decode", model=model, input="word " * (ctx_size * 2))
check(error.body.get("code") == "context_length_exceeded", f"context_length_exceeded: {error.body}")
check(error.body.get("param") == "input", f"names `input`: {error.body}")

error = refused(openai.BadRequestError, "an empty list", model=model, input=[])
check(error.body.get("param") == "input", f"empty input names `input`: {error.body}")

error = refused(openai.BadRequestError, "token arrays", model=model, input=[[1, 2, 3]])
check(error.body.get("param") == "input", f"token arrays name `input`: {error.body}")

print(f"ok: {checks} checks")
