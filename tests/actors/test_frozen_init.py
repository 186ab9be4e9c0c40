"""The messages' quicker ``__init__``: the same parameters and fields as the dataclass's own."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest

from actors import messages
from actors._frozen_init import quick_frozen_init


@dataclass(frozen=True, slots=True)
class _Plain:
    first: int
    second: str = "two"
    third: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Base:
    name: str
    size: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class _Derived(_Base):
    extra: dict[str, Any] = field(default_factory=dict)
    flag: bool


_ORIGINAL = {cls: cls.__init__ for cls in (_Plain, _Base, _Derived)}
for _cls in (_Plain, _Base, _Derived):
    quick_frozen_init(_cls)


def test_it_takes_the_parameters_the_dataclass_took() -> None:
    for cls, original in _ORIGINAL.items():
        assert cls.__init__ is not original
        assert [
            (p.name, p.kind, p.default is p.empty)
            for p in inspect.signature(cls.__init__).parameters.values()
        ] == [
            (p.name, p.kind, p.default is p.empty)
            for p in inspect.signature(original).parameters.values()
        ]


def test_it_sets_every_field_and_defaults_as_the_dataclass_did() -> None:
    plain = _Plain(1)
    assert (plain.first, plain.second, plain.third) == (1, "two", [])
    assert _Plain(1).third is not plain.third  # a new list from the factory each time
    given = [5]
    assert _Plain(2, "b", given).third is given
    assert _Plain(3, third=[1]) == _Plain(first=3, second="two", third=[1])
    derived = _Derived(name="n", flag=True)
    assert (derived.name, derived.size, derived.extra, derived.flag) == ("n", 1, {}, True)
    assert dataclasses.replace(derived, size=4) == _Derived(name="n", size=4, flag=True)
    assert repr(derived) == "_Derived(name='n', size=1, extra={}, flag=True)"


def test_it_refuses_what_the_dataclass_refused() -> None:
    with pytest.raises(TypeError):
        _Plain()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Derived(name="n")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Derived("n", True)  # type: ignore[misc]
    with pytest.raises(TypeError):
        _Plain(1, unknown=2)  # type: ignore[call-arg]


def test_what_it_made_stays_frozen() -> None:
    plain = _Plain(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.first = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del plain.second  # type: ignore[misc]
    assert hash(_Base(name="a")) == hash(_Base(name="a"))


def test_it_takes_only_frozen_dataclasses_with_slots_and_no_post_init() -> None:
    @dataclass
    class Mutable:
        value: int

    @dataclass(frozen=True)
    class NoSlots:
        value: int

    @dataclass(frozen=True, slots=True)
    class After:
        value: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class Hidden:
        value: int
        derived: int = field(init=False, default=0)

    for cls in (Mutable, NoSlots, After, Hidden, int):
        with pytest.raises(TypeError):
            quick_frozen_init(cls)


def test_every_message_has_the_quick_init() -> None:
    for name in messages.__all__:
        cls = getattr(messages, name)
        if cls in (messages.CancelRun, messages.ResumeStep):
            # Rare, and their own __post_init__ makes their reply once-only.
            continue
        if dataclasses.is_dataclass(cls) and dataclasses.fields(cls):
            assert "_set0" in cls.__init__.__code__.co_names, name  # sets through the slot


def test_a_cancel_is_answered_once_whoever_answers_it() -> None:
    # Its handler answered NOT_HERE as it failed, and the failure answered it again as
    # undelivered: a claimer's callback took the second answer for a newer cancel's.
    answers: list[messages.CancelOutcome] = []
    cancel = messages.CancelRun(run_id="r", reply=answers.append)
    cancel.reply(messages.CancelOutcome.NOT_HERE)
    cancel.reply_once_recorded()(True)
    cancel.reply(messages.CancelOutcome.NOT_HERE)
    assert answers == [messages.CancelOutcome.NOT_HERE]
