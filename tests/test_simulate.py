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


def test_an_agent_offers_its_suites_in_every_conversation():
    """An agent's tool set does not change with the question: a conversation
    that needs one suite is offered every suite the agent holds, the replayed
    ground truth still succeeds, and an entry the agent cannot run is refused."""
    from protege.importers import bfcl as B

    suites = ("GorillaFileSystem", "MathAPI", "TwitterAPI", "VehicleControlAPI")
    pairs = [(s, e) for s, e in B.category_entries("multi_turn_base") if set(e["involved_classes"]) <= set(suites)]
    own = [(s, e) for s, e in pairs if len(e["involved_classes"]) == 1][:2]
    cfg = B.BfclImportConfig(suites=suites)
    idx = ReplayIndex.from_pairs((ex.request, ex.response) for i, (s, e) in enumerate(own)
                                 for ex in B.entry_exchanges("multi_turn_base", e, i, cfg, s))
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="x",
                           http_client=TestClient(create_replay_app(idx)))
    from protege.simulate.bfcl import run_entry

    for i, (s, e) in enumerate(own):
        ex = B.entry_exchanges("multi_turn_base", e, i, cfg, s)[0]
        offered = {t["function"]["name"] for t in ex.request["tools"]}
        alone = {t["function"]["name"] for t in B.entry_exchanges("multi_turn_base", e, i, B.BfclImportConfig(), s)[0]
                 .request["tools"]}
        assert alone < offered  # the other suites' tools too
        r = run_entry(client, "multi_turn_base", e, i, SimulateConfig(categories=[], suites=suites), s)
        assert r is not None and r.success, r
    other = next(e for _, e in B.category_entries("multi_turn_base") if "TradingBot" in e["involved_classes"])
    with pytest.raises(ValueError, match="TradingBot"):
        B.entry_exchanges("multi_turn_base", other, 0, cfg, "multi_turn_base")


def test_demo_workload_holds_out_whole_questions_of_each_agent():
    from protege.demo.end_to_end import SUITES, question_of, workload

    w = workload()
    for suite in SUITES:
        seen = {question_of(r.entry) for r in w["seen"] if r.suites == suite}
        unseen = {question_of(r.entry) for r in w["unseen"] if r.suites == suite}
        assert len(seen) >= 40 and unseen and not seen & unseen
        runs = [r for r in w["seen"] + w["unseen"] if r.suites == suite]
        assert all(set(r.entry["involved_classes"]) <= set(suite) for r in runs)
        # One suite in every conversation: the agent is one job, not a union of unrelated ones.
        assert set.intersection(*(set(r.entry["involved_classes"]) for r in runs))
