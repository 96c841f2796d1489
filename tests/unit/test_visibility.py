"""The queue's ``show`` rules, one definition for REST offer views and IM texts."""

from __future__ import annotations

from expertline.visibility import apply_show, mask


def test_unlisted_attributes_are_hidden_by_default() -> None:
    values = {"caller": "+15551234567", "account": "AC-99887766", "notes": "vip", "tier": 2}
    rules = {"caller": "visible", "account": "masked", "notes": "hidden"}
    assert apply_show(values, rules) == {"caller": "+15551234567", "account": "****7766"}
    assert apply_show(values, rules, unlisted="visible")["tier"] == "2"


def test_masking_keeps_four_characters_and_is_idempotent() -> None:
    assert mask("123") == "****"
    assert mask("12345678") == "****5678"
    assert mask(mask("12345678")) == mask("12345678")
    assert apply_show(
        {"langs": ["en", "es"], "vip": True}, {"langs": "visible", "vip": "visible"}
    ) == {
        "langs": "en, es",
        "vip": "yes",
    }
