"""Commands: what ``CommandReceived`` records of a validated command."""

from __future__ import annotations

import types
import typing

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core.commands import Command, jsonable, parse_command, record

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=64)
positive = st.integers(1, 1 << 62)

commands = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("submit"),
            "account": names,
            "instrument": names,
            "side": st.sampled_from(["buy", "sell"]),
            "qty": positive,
        },
        optional={
            "order_type": st.sampled_from(["limit", "market"]),
            "price": st.integers(0, 1 << 62),
            "tif": st.sampled_from(["gtc", "ioc", "fok"]),
            "post_only": st.booleans(),
        },
    ),
    st.fixed_dictionaries({"type": st.just("cancel"), "account": names, "order_id": positive}),
    st.fixed_dictionaries(
        {
            "type": st.just("amend"),
            "account": names,
            "order_id": positive,
            "price": positive,
            "qty": positive,
        }
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["deposit", "withdraw"]), "account": names, "amount": positive}
    ),
    st.fixed_dictionaries(
        {"type": st.just("cancel_all"), "account": names},
        optional={"instrument": st.none() | names},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("bot_failed"),
            "account": names,
            "bot": names,
            "cause": st.sampled_from(["raised", "budget", "timeout", "disconnected"]),
        },
        optional={"callback": st.text(max_size=64), "detail": st.text(max_size=200)},
    ),
)


@settings(max_examples=400)
@given(commands)
def test_the_record_of_a_command_is_its_model_dump(raw):
    command = parse_command(jsonable(raw))
    assert record(command) == command.model_dump()
    options = orjson.OPT_SORT_KEYS
    assert orjson.dumps(record(command), option=options) == orjson.dumps(
        command.model_dump(), option=options
    )


def test_the_record_is_a_copy_not_the_commands_own_fields():
    command = parse_command({"type": "cancel", "account": "alice", "order_id": 3})
    copy = record(command)
    copy["order_id"] = 4
    assert command.order_id == 3


def _leaf_types(annotation) -> set:
    """The plain types an annotation admits (through Annotated, unions and Literal)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _leaf_types(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return {type(value) for value in typing.get_args(annotation)}
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_leaf_types(arg) for arg in typing.get_args(annotation)))
    return {annotation}


def test_every_command_model_is_flat():
    """``record`` copies the field values as they are, which is ``model_dump`` only while no
    field holds a model, a list or a dict: a new command with such a field must fail here."""
    union = typing.get_args(typing.get_args(Command)[0])
    assert len(union) == 7
    for model in union:
        for name, field in model.model_fields.items():
            leaves = _leaf_types(field.annotation)
            assert leaves <= {str, int, bool, type(None)}, (model.__name__, name, leaves)


def test_a_refusal_quoting_what_a_client_sent_is_one_printable_line():
    """Found by tests/fuzz: a type tag holding a newline was quoted into the reason as is."""
    from exchange.core.commands import CommandError

    for raw in ({"type": "\n", "account": "a"}, {"type": "x\x00" * 2_000, "account": "a"}):
        try:
            parse_command(raw)
        except CommandError as exc:
            assert exc.reason.isprintable() and len(exc.reason) <= 1_000, exc.reason
        else:
            raise AssertionError("accepted")
