"""The sandboxed template environment: HF helpers behave like transformers', hostile templates fail safely."""

from __future__ import annotations

import datetime

import pytest

from lmdock.chat import ChatFormatter, TemplateError
from lmdock.chat.template import ChatTemplate
from lmdock.core.errors import InvalidRequest
from lmdock.core.request import ChatRequest, Message


def render(source: str, **context) -> str:
    return ChatTemplate(source).render(**context)


def test_tojson_does_not_html_escape_and_keeps_unicode():
    assert render("{{ x | tojson }}", x={"a": "<b>&'é"}) == '{"a": "<b>&\'é"}'


def test_tojson_accepts_transformers_kwargs():
    assert render("{{ x | tojson(indent=2) }}", x={"a": 1}) == '{\n  "a": 1\n}'
    assert (
        render("{{ x | tojson(separators=(',', ':'), sort_keys=true) }}", x={"b": 1, "a": 2})
        == '{"a":2,"b":1}'
    )


def test_generation_tags_are_ignored():
    assert render("A{% generation %}B{{ x }}{% endgeneration %}C", x="!") == "AB!C"


def test_loop_controls_and_trim_blocks():
    source = "{% for i in [1, 2, 3] %}\n{% if i == 2 %}{% continue %}{% endif %}{{ i }}{% endfor %}"
    assert render(source) == "13"


def test_raise_exception_is_a_template_error():
    with pytest.raises(TemplateError, match="roles must alternate"):
        render("{{ raise_exception('roles must alternate') }}")
    assert issubclass(TemplateError, InvalidRequest)


def test_strftime_now():
    assert render("{{ strftime_now('%Y') }}") == str(datetime.datetime.now().year)


def test_syntax_error():
    with pytest.raises(TemplateError):
        ChatTemplate("{% for %}")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ self.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ joiner.__init__.__globals__['__builtins__']['__import__']('os').system('id') }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ (messages | first).__class__.__base__.__subclasses__() }}",
        "{% set x = [] %}{{ x.append(1) }}",
        "{{ range(10 ** 9) | list }}",
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    ],
)
def test_hostile_templates_fail_with_template_error(source):
    with pytest.raises(TemplateError):
        render(source, messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "source", ["{{ ''.__class__ }}", "{{ lipsum.__globals__ }}", "{{ config }}{{ request }}"]
)
def test_hostile_lookups_render_nothing(source):
    assert render(source) == ""


def test_formatter_with_a_hostile_template_fails_per_request_not_at_load():
    formatter = ChatFormatter("{{ cycler.__init__.__globals__.os.popen('id').read() }}")
    with pytest.raises(TemplateError):
        formatter.render(ChatRequest("m", [Message("user", "hi")], 10))
