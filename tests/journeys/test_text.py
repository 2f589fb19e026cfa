"""A blank name is blank to the API and to the JSON Schema it publishes alike."""

import re

import pytest

from journeys.rules.definition import RuleError, parse_rule
from journeys.text import LEADING_BLANKS_THEN_VISIBLE, VISIBLE_PATTERN, is_blank

# Space to Python only (U+001C-U+001F, U+0085), to ECMAScript only (U+FEFF), and to both.
ODD_SPACES = "\x1c\x1d\x1e\x1f\x85\ufeff\t \xa0\u2028\u3000"


def test_every_character_is_blank_or_visible_to_both_the_check_and_the_pattern():
    for code in range(0x10000):  # every space character of either is in the BMP
        c = chr(code)
        assert (re.search(VISIBLE_PATTERN, c) is None) == is_blank(c), hex(code)
        assert (re.match(LEADING_BLANKS_THEN_VISIBLE, ODD_SPACES + c) is None) == is_blank(c)


def test_a_campaign_reference_of_control_spaces_is_refused_and_one_visible_character_is_not():
    base = {"name": "r", "when": {"event": "x"}}
    for blank in ["\x1d", "\ufeff", ODD_SPACES]:
        with pytest.raises(RuleError) as refused:
            parse_rule({**base, "then": [{"sendCampaign": blank}]})
        assert list(refused.value.errors) == ["then[0].sendCampaign"]
    parse_rule({**base, "then": [{"sendCampaign": ODD_SPACES + "w"}]})
