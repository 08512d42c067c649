"""Usage accounting and the per-task budget guard.

Before every provider call the caller reserves an estimate; a call whose estimate would
cross `max_cost_usd` or `max_tokens` (counting what is spent and what other in-flight
calls reserved) is refused with BudgetExhausted, so a budget is overshot by at most the
error of one call's estimate."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

from .errors import BudgetExhausted
from .models import Budget, Usage
from .pricing import PriceTable


@dataclass(frozen=True)
class Reservation:
    rid: int
    tokens: int
    cost_usd: float


class UsageMeter:
    def __init__(self, budget: Budget, prices: PriceTable, usage: Usage | None = None):
        self.budget = budget
        self.prices = prices
        self.usage = usage or Usage()
        self._reserved: dict[int, Reservation] = {}
        self._ids = itertools.count(1)
        # design: providers may account from executor threads as well as the loop.
        self._lock = threading.Lock()

    def reserve(self, model: str, estimated_input: int, estimated_output: int) -> Reservation:
        tokens = estimated_input + estimated_output
        cost = self.prices.cost(model, estimated_input, estimated_output)
        with self._lock:
            if self.budget.exhausted:
                raise BudgetExhausted("budget exhausted")
            held_tokens = sum(r.tokens for r in self._reserved.values())
            held_cost = sum(r.cost_usd for r in self._reserved.values())
            spent_tokens = self.usage.input_tokens + self.usage.output_tokens
            if self.budget.max_tokens is not None and spent_tokens + held_tokens + tokens > self.budget.max_tokens:
                self.budget.exhausted = True
                raise BudgetExhausted(f"max_tokens {self.budget.max_tokens} reached")
            if (
                self.budget.max_cost_usd is not None
                and self.usage.cost_usd + held_cost + cost > self.budget.max_cost_usd
            ):
                self.budget.exhausted = True
                raise BudgetExhausted(f"max_cost_usd {self.budget.max_cost_usd} reached")
            reservation = Reservation(next(self._ids), tokens, cost)
            self._reserved[reservation.rid] = reservation
            return reservation

    def record(self, reservation: Reservation | None, model: str, input_tokens: int, output_tokens: int) -> None:
        cost = self.prices.cost(model, input_tokens, output_tokens)
        with self._lock:
            if reservation is not None:
                self._reserved.pop(reservation.rid, None)
            self.usage.add(model, input_tokens, output_tokens, cost)

    def release(self, reservation: Reservation | None) -> None:
        """Give back a reservation whose call never completed (cancelled or failed)."""
        if reservation is not None:
            with self._lock:
                self._reserved.pop(reservation.rid, None)


class ScopedMeter:
    """A view of a task's meter for one agent: every call counts against the task's budget
    and is also summed into this agent's own `usage`."""

    def __init__(self, meter: UsageMeter):
        self.meter = meter
        self.budget = meter.budget
        self.usage = Usage()

    def reserve(self, model: str, estimated_input: int, estimated_output: int) -> Reservation:
        return self.meter.reserve(model, estimated_input, estimated_output)

    def record(self, reservation: Reservation | None, model: str, input_tokens: int, output_tokens: int) -> None:
        self.meter.record(reservation, model, input_tokens, output_tokens)
        self.usage.add(model, input_tokens, output_tokens, self.meter.prices.cost(model, input_tokens, output_tokens))

    def release(self, reservation: Reservation | None) -> None:
        self.meter.release(reservation)
