"""The teacher seam: every implementation answers a request the same way
through ``Teacher``, and a failure is a ``TeacherError``, not an SDK's."""

from __future__ import annotations

import pytest

from protege.teacher import HttpTeacher, ReplayIndex, ReplayTeacher, Teacher, TeacherError, message_of
from protege.testing import FakeTeacher, FakeTeacherServerThread, completion

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
REQUEST = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Weather in Lisbon, please"}],
           "tools": TOOLS}


def _streamed(teacher: Teacher, request: dict) -> dict:
    """The message a client rebuilds from the teacher's chunks."""
    content, calls = "", {}
    for chunk in teacher.stream(request):
        for choice in chunk["choices"]:
            delta = choice.get("delta") or {}
            content += delta.get("content") or ""
            for c in delta.get("tool_calls") or []:
                slot = calls.setdefault(c["index"], {"name": "", "arguments": ""})
                slot["name"] += (c.get("function") or {}).get("name") or ""
                slot["arguments"] += (c.get("function") or {}).get("arguments") or ""
    return {"content": content or None, "calls": [calls[k] for k in sorted(calls)]}


def _calls(message: dict) -> list[dict]:
    return [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in message.get("tool_calls") or []]


def test_http_replay_and_fake_teachers_answer_alike():
    want = completion(REQUEST)
    with FakeTeacherServerThread() as up:
        teachers = {
            "http": HttpTeacher(up.url + "/v1", "sk-test", max_retries=0),
            "replay": ReplayTeacher(ReplayIndex.from_pairs([(REQUEST, want)])),
            "fake": FakeTeacher(lambda req: {"content": None, "tool_calls": want["choices"][0]["message"]["tool_calls"]}),
        }
        expected = _calls(message_of(want))
        assert expected and expected[0]["name"] == "get_weather"
        for name, teacher in teachers.items():
            assert isinstance(teacher, Teacher), name
            assert _calls(message_of(teacher.complete(REQUEST))) == expected, name
            assert _streamed(teacher, REQUEST)["calls"] == expected, name


def test_a_teacher_that_cannot_answer_raises_teacher_error():
    with pytest.raises(TeacherError, match="no recorded answer"):
        ReplayTeacher(ReplayIndex()).complete(REQUEST)
    with FakeTeacherServerThread() as up:
        http = HttpTeacher(up.url + "/v1", "sk-test", max_retries=0)
        with pytest.raises(TeacherError, match="failed"):
            http.complete({**REQUEST, "model": "fake-error-500"})


def test_the_fake_teacher_keeps_what_it_was_asked():
    fake = FakeTeacher("a reply")
    assert message_of(fake.complete(REQUEST)) == {"role": "assistant", "content": "a reply"}
    assert _streamed(fake, REQUEST) == {"content": "a reply", "calls": []}
    assert fake.requests == [REQUEST, REQUEST]
