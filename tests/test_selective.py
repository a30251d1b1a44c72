"""Selective accuracy: AURC, accuracy at a coverage, the signal and floor choice."""

from __future__ import annotations

import pytest

from protege.evaluate import selective as S


def test_aurc_rewards_a_signal_that_ranks_right_answers_first() -> None:
    right = [1, 1, 0, 1, 0]
    perfect = [0.9, 0.8, 0.1, 0.7, 0.2]
    reversed_ = [0.1, 0.2, 0.9, 0.3, 0.8]
    assert S.aurc(perfect, right) < S.aurc(reversed_, right)
    # Top-1..5 error rates of the perfect ranking: 0, 0, 0, 1/4, 2/5.
    assert S.aurc(perfect, right) == pytest.approx((0 + 0 + 0 + 0.25 + 0.4) / 5)
    assert S.accuracy_at(perfect, right, 0.6) == 1.0
    assert S.accuracy_at(reversed_, right, 0.4) == 0.0
    assert S.best_signal({"min_prob": reversed_, "mean_logprob": perfect}, right) == "mean_logprob"
    table = S.compare({"a": perfect}, right)
    assert set(table["a"]) == {"aurc", "acc@50", "acc@60", "acc@80"}


def test_unscored_answers_and_missing_confidences() -> None:
    # An answer without a score is left out; one without a confidence ranks last.
    assert S.accuracy_at([0.9, None, 0.5], [1, 1, float("nan")], 0.5) == 1.0
    assert S.ranked([None, 0.4], [1, 0]).tolist() == [0, 1]


def test_floor_stops_at_the_first_fall_below_target_and_respects_ties() -> None:
    conf = [0.99, 0.98, 0.97, 0.97, 0.5, 0.4]
    right = [1, 1, 1, 0, 1, 1]
    # At 0.97 both tied answers are served: 3 of 4 right falls below 0.9.
    assert S.floor_for(conf, right, 0.9) == 0.98
    assert S.floor_for(conf, right, 0.7) == 0.4
    assert S.floor_for([0.9, 0.8], [0, 1], 0.5) is None
