"""What one step costs on its step actor's thread, driven directly, without the threads.

Run it with ``.venv/bin/python benchmarks/step_cost.py``. To measure another
checkout with the same script, put it first on the path:
``PYTHONPATH=/path/to/checkout .venv/bin/python benchmarks/step_cost.py``.

A step actor's message handler is called in a loop with one ``CallStep`` of a
3-step chain (the W2 workflow of ``bench.py``: a step that returns its input),
replying to a sink that drops the reply, in a pool that never has a next call.
So the figures leave out what the threads cost (the inbox, waking up, the
interpreter lock) and keep what the step actor does per step: build the
context, validate the input, call the body, validate, dump and check the
output, the span, the reply. Each mode runs in a process of its own:

- quiet: structlog unconfigured, no OpenTelemetry (nothing would see a span);
- logged: structlog configured as ``bench.py`` does (events built and dropped);
- otel: an OpenTelemetry SDK tracer provider with no exporter.

The floor is the same step's own work called inline: validate the input dict,
call the body, ``model_dump(mode="json")`` and a trial ``msgpack`` encoding.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ROUNDS = 7
CALLS = 20_000


class _Sink:
    """Where the replies go: nowhere."""

    def tell(self, message: Any) -> None:
        pass


class _Pool:
    """A step pool that never has a next call for the actor.

    As a memory store's runtime has it: no lease guard, no count of the runs here,
    and no async loop (the W2 bodies are plain functions).
    """

    guard = None
    here = None
    loop = None

    def finished(self, ref: Any) -> None:
        return None


def _capture_call() -> Any:
    from bench import PAYLOAD, chain_workflow  # type: ignore[import-not-found]

    from runtime import Runtime, _probes

    captured: list[Any] = []

    def body(call: Any, ctx: Any) -> Any:
        captured.append(call)
        return ctx.input_data

    _probes.step_body = body
    try:
        with Runtime() as rt:
            rt.register(chain_workflow(3)).create_run().start(input_data=PAYLOAD)
    finally:
        _probes.step_body = None
    call = captured[1]
    return dataclasses.replace(call, run=dataclasses.replace(call.run, reply_to=_Sink()))


def _best(fn: Any, rounds: int, calls: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - began) / calls)
    return best * 1e6


def _python_calls(fn: Any, times: int = 100) -> float:
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profile)
    try:
        for _ in range(times):
            fn()
    finally:
        sys.setprofile(None)
    return count / times


def measure(mode: str, rounds: int = ROUNDS, calls: int = CALLS) -> None:
    """Measure one mode in this process; print ``mode cpu_us calls floor_us``."""
    from bench import configure_logging

    import actors.step as step_module
    from runtime._snapshot import check_encodable

    call = _capture_call()
    configure_logging("logged" if mode == "logged" else "quiet")
    if mode == "otel":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())
    actor = step_module.StepActor(_Pool())  # type: ignore[arg-type]

    def one_step() -> None:
        actor.on_receive(call)

    step = call.step

    def floor() -> None:
        model = step.input_schema.model_validate(call.payload)
        output = step.execute(_Ctx(model)).model_dump(mode="json")
        check_encodable(output, "output", str_keys_known=True)

    cpu = _best(one_step, rounds, calls)
    print(mode, cpu, _python_calls(one_step), _best(floor, rounds, calls), flush=True)


@dataclasses.dataclass
class _Ctx:
    input_data: Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 200 calls: a smoke run")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds, calls = (1, 200) if args.quick else (ROUNDS, CALLS)
    if args.mode:
        measure(args.mode, rounds, calls)
        return
    print(
        f"step_cost · CPython {sys.version.split()[0]} · best of {rounds} rounds of "
        f"{calls:,} calls · {os.cpu_count()} cores"
    )
    print()
    print("mode   | CPU per step | Python calls per step | floor   | ratio")
    print("-------+--------------+-----------------------+---------+------")
    for mode in ("quiet", "logged", "otel"):
        out = subprocess.run(
            [sys.executable, __file__, "--mode", mode, *(["--quick"] if args.quick else [])],
            check=True,
            capture_output=True,
            text=True,
            env=os.environ,
        ).stdout.split()
        cpu, calls, floor = float(out[1]), float(out[2]), float(out[3])
        print(f"{mode:6} | {cpu:9.1f} µs | {calls:21.0f} | {floor:4.1f} µs | {cpu / floor:4.1f}x")


if __name__ == "__main__":
    main()
