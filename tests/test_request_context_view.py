"""The request context a step receives: a view of its run's values, copied when first touched."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from runtime import RequestContext
from runtime._request_context import changed, view


class Copier:
    """A deep copy that counts its calls (and may take its time)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    def __call__(self, values: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        time.sleep(self.delay)
        return copy.deepcopy(values)


def test_reading_keys_and_scalars_copies_nothing_and_leaves_the_view_unchanged() -> None:
    values = {"user": "ada", "count": 2, "tags": ["a"]}
    copier = Copier()
    context = view(values, copier)

    assert context["user"] == "ada" and context.get("count") == 2
    assert "tags" in context and context.has("tags") and "nope" not in context
    assert sorted(context) == ["count", "tags", "user"] and len(context) == 3
    assert repr(context) == f"RequestContext({values!r})"

    assert copier.calls == 0
    assert changed(context) is None


def test_reading_a_list_or_dict_hands_out_a_copy_of_it() -> None:
    values: dict[str, Any] = {"tags": ["a"], "limits": {"n": 1}}
    copier = Copier()
    context = view(values, copier)

    context["tags"].append("b")
    context.get("limits")["n"] = 2

    assert copier.calls == 1
    assert values == {"tags": ["a"], "limits": {"n": 1}}
    assert changed(context) == {"tags": ["a", "b"], "limits": {"n": 2}}


def test_every_kind_of_write_copies_once_and_never_reaches_the_runs_values() -> None:
    values = {"user": "ada", "drop": True, "old": 1}
    copier = Copier()
    context = view(values, copier)

    context["user"] = "bob"
    context.set("tier", "gold")
    del context["drop"]
    assert context.delete("old") and not context.delete("old")
    context.update(more=1)

    assert copier.calls == 1
    assert values == {"user": "ada", "drop": True, "old": 1}
    assert changed(context) == {"user": "bob", "tier": "gold", "more": 1}


def test_to_dict_of_a_view_shares_no_value_with_the_run() -> None:
    values = {"tags": ["a"]}
    context = view(values, Copier())

    context.to_dict()["tags"].append("b")

    assert values == {"tags": ["a"]}


def test_a_context_made_by_the_caller_is_never_a_view() -> None:
    context = RequestContext({"user": "ada"})

    assert changed(context) == {"user": "ada"}


def test_two_threads_touching_a_view_first_at_once_keep_both_their_writes() -> None:
    copier = Copier(delay=0.05)
    context = view({"user": "ada"}, copier)
    start = threading.Barrier(2)

    def write(key: str) -> None:
        start.wait()
        context[key] = key

    threads = [threading.Thread(target=write, args=(key,)) for key in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert copier.calls == 1
    assert changed(context) == {"user": "ada", "a": "a", "b": "b"}
