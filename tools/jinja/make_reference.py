"""Renders the chat templates in templates.py with Python's jinja2 exactly as
transformers' apply_chat_template does (trim_blocks, lstrip_blocks, the
loopcontrols extension, its tojson and raise_exception), and writes the
outputs for Switchyard's Jinja conformance test:

    pip install jinja2==3.1.6
    python3 tools/jinja/make_reference.py > Tests/SwitchyardServerTests/Fixtures/jinja-reference.json
"""
import json
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import templates  # noqa: E402


class Raised(Exception):
    pass


def raise_exception(message):
    raise Raised(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception

SYSTEM = {"role": "system", "content": "You are terse."}
USER1 = {"role": "user", "content": "  Hello there!  "}
ASSIST1 = {"role": "assistant", "content": "Hi. What do you need?"}
USER2 = {"role": "user", "content": "Write 'def f():' in Python\nplease."}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}]
TOOL_CALL = {"role": "assistant", "content": "",
             "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]}
TOOL_RESULT = {"role": "tool", "content": "{\"temp\": 3}"}
THINKING = {"role": "assistant", "content": "<think>\nShort question.\n</think>\n\nHi."}

BASE = {"bos_token": "<s>", "eos_token": "</s>", "tools": None, "documents": None}
CONTEXTS = {
    "system_user": {"messages": [SYSTEM, USER1], "add_generation_prompt": True},
    "multi_turn": {"messages": [USER1, ASSIST1, USER2], "add_generation_prompt": True},
    "no_prompt": {"messages": [USER1, ASSIST1], "add_generation_prompt": False},
    "system_multi_turn": {"messages": [SYSTEM, USER1, ASSIST1, USER2], "add_generation_prompt": True},
    "bad_alternation": {"messages": [USER1, USER2], "add_generation_prompt": True},
    "tools": {"messages": [SYSTEM, USER1, TOOL_CALL, TOOL_RESULT, TOOL_RESULT], "tools": TOOLS, "add_generation_prompt": True},
    "thinking": {"messages": [USER1, THINKING, USER2], "add_generation_prompt": True, "enable_thinking": False},
}

CHAT = {"qwen2.5": templates.QWEN25, "qwen3": templates.QWEN3, "mixtral": templates.MIXTRAL, "olmoe": templates.OLMOE,
        "zephyr": templates.ZEPHYR, "llama3": templates.LLAMA3, "llama2": templates.LLAMA2, "gemma": templates.GEMMA}

cases = []
for name, source in list(CHAT.items()) + [("feature:" + k, v) for k, v in templates.FEATURES.items()]:
    contexts = CONTEXTS if not name.startswith("feature:") else {k: CONTEXTS[k] for k in ("system_user", "multi_turn")}
    for cname, ctx in contexts.items():
        context = dict(BASE, **ctx)
        if name == "llama2":
            context["USE_DEFAULT_PROMPT"] = True
        case = {"name": f"{name} / {cname}", "template": source,
                "context": json.loads(json.dumps(context, sort_keys=True))}
        try:
            case["output"] = env.from_string(source).render(**case["context"])
        except Raised as e:
            case["raises"] = str(e)
        cases.append(case)

json.dump({"generator": f"tools/jinja/make_reference.py, jinja2 {jinja2.__version__}", "cases": cases},
          sys.stdout, indent=1, ensure_ascii=False)
print()
