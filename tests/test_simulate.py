from __future__ import annotations

import openai
import pytest
from starlette.testclient import TestClient

from protege.simulate.bfcl import SimulateConfig, simulate_bfcl, single_turn_success
from protege.teacher.replay import ReplayIndex, create_replay_app


def _client(categories, limit):
    idx = ReplayIndex.from_source("bfcl:" + ",".join(categories), limit=limit)
    return openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=TestClient(create_replay_app(idx)))


def test_teacher_replay_agent_succeeds_on_its_own_ground_truth():
    cats = ["simple_python", "irrelevance", "multi_turn_base"]
    report = simulate_bfcl(_client(cats, 3), SimulateConfig(categories=cats, limit=3))
    by = report.by_category()
    assert {c: v["entries"] for c, v in by.items()} == {c: 3 for c in cats}
    # The replayed teacher is the ground truth: the agent loop, the simulators
    # and the checks must agree that it succeeds.
    assert report.success_rate == 1.0, [r for r in report.results if not r.success]
    multi = [r for r in report.results if r.category == "multi_turn_base"]
    assert all(r.llm_calls > 1 and r.calls > 0 for r in multi)


def test_a_wrong_agent_fails_the_state_check():
    class Wrong:
        """Answers every step with no tool call: the state never changes."""

        class chat:  # noqa: N801
            class completions:  # noqa: N801
                class with_raw_response:  # noqa: N801
                    @staticmethod
                    def create(**kw):
                        class Raw:
                            headers = {}

                            def parse(self):
                                msg = type("M", (), {"content": "ok", "tool_calls": None})
                                return type("R", (), {"choices": [type("C", (), {"message": msg})]})

                        return Raw()

    report = simulate_bfcl(Wrong(), SimulateConfig(categories=["multi_turn_base"], limit=2))
    assert report.success_rate == 0.0


@pytest.mark.parametrize(
    "args,ok",
    [
        ('{"base": 10, "height": 5}', True),
        ('{"base": 10, "height": 5, "unit": "units"}', True),
        ('{"base": 10, "height": 6}', False),
        ('{"base": 10}', False),
        ('{"base": 10, "height": 5, "bogus": 1}', False),
    ],
)
def test_single_turn_checker(args, ok):
    gt = [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]
    msg = {"tool_calls": [{"id": "c", "type": "function", "function": {"name": "calculate_triangle_area", "arguments": args}}]}
    assert single_turn_success(msg, gt, {}) is ok
    assert single_turn_success({"content": "no"}, [], {}) is True
