"""Initials (issue 21): letters only, the same function for the page and the OG card."""

from __future__ import annotations

import pytest

from render.text import initials


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Demo Profile", "DP"),
        ("ゆ🌸", "ゆ"),
        ("M🚀", "M"),
        ("Y—", "Y"),
        ("🌸 Mia Wong", "MW"),  # a word with no letter is skipped
        ("— Ana", "A"),
        ("\U0001f680", "?"),
        ("", "?"),
        ("12 Monkeys", "M"),  # digits are not letters
        ("élodie dupont", "ÉD"),
        ("e\u0301lodie", "E\u0301"),  # a combining accent stays with its letter
        ("李小龙", "李"),
        ("Анна Каренина", "АК"),
        ("(Kim) Lee Park", "KL"),
    ],
)
def test_initials_are_letters_only(name, expected):
    assert initials(name) == expected


def test_og_card_uses_the_same_function():
    import og.service

    assert og.service.initials is initials
