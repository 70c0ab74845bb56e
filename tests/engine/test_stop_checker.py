"""Stop strings on text that arrives in pieces."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from oci_engine.stop_checker import find_stop_string, hold_back


def feed(pieces, stops):
    """Feed text piece by piece as the engine does; returns (text, stop, streamed)."""
    text, streamed = "", ""
    hold = hold_back(stops)
    for piece in pieces:
        text += piece
        hit = find_stop_string(text, stops, len(piece))
        if hit:
            return text[:hit[0]], hit[1], streamed
        visible = max(len(streamed), len(text) - hold)
        streamed = text[:visible]
    return text, None, streamed


def test_stop_split_over_three_pieces_is_found_and_cut():
    text, stop, streamed = feed(["def f():\n  ret", "urn 1\n\n", "#", "## end"], ["\n\n###"])
    assert stop == "\n\n###" and text == "def f():\n  return 1"
    assert "\n\n#" not in streamed


def test_earliest_of_several_stops_wins():
    assert find_stop_string("abcXYdefZ", ["Z", "XY"], 9) == (3, "XY")


def test_old_text_is_not_searched_again():
    # "ab" ended before the new piece, so it was already checked (and was not a stop then)
    assert find_stop_string("ab" + "cd", ["ab"], 2) is None
    assert find_stop_string("a" + "bcd", ["ab"], 3) == (0, "ab")


@given(text=st.text(alphabet="ab\n#", max_size=40), cuts=st.lists(st.integers(0, 40), max_size=8),
       stop=st.text(alphabet="ab\n#", min_size=1, max_size=4))
def test_piecewise_equals_whole_text_search(text, cuts, stop):
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    got_text, got_stop, streamed = feed(pieces, [stop])
    i = text.find(stop)
    if i == -1:
        assert got_stop is None and got_text == text
    else:
        assert got_stop == stop and got_text == text[:i]
    assert stop not in streamed and got_text.startswith(streamed)
