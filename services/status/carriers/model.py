"""What a carrier tells us about a parcel, in our words: stages, scans, carrier codes, errors.

Pure: no HTTP, no Kafka, no database. The Kuaidi100 state table lives here too because the
tracking aggregator's state codes are the only vocabulary our carriers reach us in; a second
provider would add its own table beside it, mapping onto the same :class:`Stage`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import ClassVar


class Stage(StrEnum):
    """Where a parcel is, as the order's status machine needs it (values match OrderStatus)."""

    PICKED_UP = "PICKED_UP"
    IN_TRANSIT = "IN_TRANSIT"
    OUT_FOR_DELIVERY = "OUT_FOR_DELIVERY"
    DELIVERED = "DELIVERED"
    EXCEPTION = "EXCEPTION"
    RETURNED = "RETURNED"


@dataclass(frozen=True)
class Scan:
    """One tracking event, as the carrier reported it."""

    carrier: str            # our carrier code: "SF", "ZTO", ...
    tracking_number: str
    stage: Stage
    scanned_at: datetime    # tz-aware UTC
    description: str        # the carrier's own text (Kuaidi100 "context"), often Chinese
    location: str | None
    provider_state: str     # the provider's code for this scan, e.g. Kuaidi100 "0" or "1002"

    def __post_init__(self) -> None:
        if self.scanned_at.tzinfo is None or self.scanned_at.utcoffset() is None:
            raise ValueError("Scan.scanned_at must be tz-aware")


# --- errors ------------------------------------------------------------------------------


class CarrierError(Exception):
    """Anything that went wrong talking to a carrier. ``kind`` is a short, stable label for
    metrics and logs; ``retriable`` says whether asking again later can help."""

    kind: ClassVar[str] = "error"
    retriable: ClassVar[bool] = False


class CarrierTimeout(CarrierError):
    """No answer within our timeout: the provider may still be working; ask again later."""

    kind = "timeout"
    retriable = True


class CarrierThrottled(CarrierError):
    """We asked too often. ``retry_after`` (seconds) is the provider's hint, when it gave one."""

    kind = "throttled"
    retriable = True

    def __init__(self, message: str = "throttled", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CarrierUnavailable(CarrierError):
    """Server error, server busy, connection refused, garbled answer: retry with backoff."""

    kind = "unavailable"
    retriable = True


class CarrierQuotaExhausted(CarrierError):
    """The account's key expired or its query quota is used up. Retrying soon only burns
    requests: wait hours (or until someone tops up the account)."""

    kind = "quota_exhausted"
    retriable = True


class CarrierRejected(CarrierError):
    """The provider refused the request as such (bad parameters, bad signature, wrong phone
    digits): the same request will fail again, so do not retry it."""

    kind = "rejected"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NoTrackingYet(CarrierError):
    """The provider knows nothing about the number yet (Kuaidi100 500 "查询无结果"). Normal for
    a label printed minutes ago: for a poller this is "nothing new", not a failure."""

    kind = "no_tracking_yet"
    retriable = True


class UnknownState(CarrierError, ValueError):
    """A state code we have no mapping for. Raised instead of guessing: a new provider code
    must be mapped on purpose, or parcels would silently sit in the wrong stage."""

    kind = "unknown_state"

    def __init__(self, state: object, context: str = "") -> None:
        where = f" ({context})" if context else ""
        super().__init__(f"unknown Kuaidi100 state {state!r}{where}; known: "
                         f"{', '.join(sorted(KUAIDI100_STATES, key=_code_order))}")
        self.state = state


class UnknownCarrier(CarrierError, ValueError):
    """A carrier code that is neither ours nor Kuaidi100's."""

    kind = "unknown_carrier"

    def __init__(self, value: object) -> None:
        known = ", ".join(f"{ours}/{com}" for ours, com in CARRIERS.items())
        super().__init__(f"unknown carrier {value!r}; known (ours/kuaidi100): {known}")
        self.value = value


class CallbackRejected(CarrierError):
    """A pushed callback we refuse. ``reason`` is one of bad_signature, malformed,
    unknown_carrier, unknown_state: answer it with an error and count it by reason."""

    kind = "callback_rejected"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --- carriers ----------------------------------------------------------------------------

#: Our carrier code -> Kuaidi100 company code (``com``).
CARRIERS: Mapping[str, str] = MappingProxyType({
    "SF": "shunfeng",     # SF Express 顺丰速运
    "ZTO": "zhongtong",   # ZTO Express 中通快递
    "YTO": "yuantong",    # YTO Express 圆通速递
    "YD": "yunda",        # Yunda 韵达快递
    "STO": "shentong",    # STO Express 申通快递
    "JD": "jd",           # JD Logistics 京东物流
    "EMS": "ems",         # China Post EMS
})
_BY_COM: Mapping[str, str] = MappingProxyType({com: ours for ours, com in CARRIERS.items()})


def carrier_code(value: str) -> str:
    """Our code for a carrier named either way: "sf", "SF" and "shunfeng" all give "SF"."""
    if not isinstance(value, str):
        raise UnknownCarrier(value)
    text = value.strip()
    if text.upper() in CARRIERS:
        return text.upper()
    if text.lower() in _BY_COM:
        return _BY_COM[text.lower()]
    raise UnknownCarrier(value)


def kuaidi100_com(value: str) -> str:
    """The Kuaidi100 ``com`` for a carrier named either way: "SF" -> "shunfeng"."""
    return CARRIERS[carrier_code(value)]


# --- Kuaidi100 states --------------------------------------------------------------------


@dataclass(frozen=True)
class StateInfo:
    stage: Stage
    name: str    # Kuaidi100's own name for the state, as it sends it in data[].status
    main: str    # the main state an advanced (resultv2=4) code belongs to


def _s(stage: Stage, name: str, main: str) -> StateInfo:
    return StateInfo(stage, name, main)


_P, _T, _O, _D, _E, _R = (Stage.PICKED_UP, Stage.IN_TRANSIT, Stage.OUT_FOR_DELIVERY,
                          Stage.DELIVERED, Stage.EXCEPTION, Stage.RETURNED)

#: Every Kuaidi100 state we understand: the main states (``state``, 0-14) and the advanced
#: ones sent with ``resultv2=4`` (three/four digits, grouped under a main state).
#:
#: Choices worth knowing:
#: - 4 退签 is RETURNED, not EXCEPTION: Kuaidi100 defines it as "returned because the
#:   recipient refused it, was out of area etc., *and the sender has signed for it*" — the
#:   parcel is back home, a final state with nothing left to chase. 401 已销单 (waybill
#:   cancelled) sits under it and is final in the same way.
#: - 6 退回 (on its way back to the sender) is RETURNED too: the order will not be delivered.
#: - 14 拒签 (recipient refused) and 2 疑难 with its sub-states are EXCEPTION: someone has to
#:   act (call the customer, re-deliver, open a claim) before the parcel moves again.
#: - 7 转投 (handed to another carrier), 8/10/11/12/13 customs states are IN_TRANSIT: the
#:   parcel is moving or waiting in the network. 13 清关异常 (customs problem) is kept
#:   IN_TRANSIT by decision of the status service's contract; customs holds usually clear.
#: - 101/102 已下单/待揽收 (label made, waiting for pick-up) belong to main state 1 and so map
#:   to PICKED_UP: we have no earlier stage, and Kuaidi100 itself reports them as state 1.
KUAIDI100_STATES: Mapping[str, StateInfo] = MappingProxyType({
    "0": _s(_T, "在途", "0"),
    "1001": _s(_T, "到达派件城市", "0"),
    "1002": _s(_T, "干线", "0"),
    "1003": _s(_T, "转递", "0"),
    "1": _s(_P, "揽收", "1"),
    "101": _s(_P, "已下单", "1"),
    "102": _s(_P, "待揽收", "1"),
    "103": _s(_P, "已揽收", "1"),
    "2": _s(_E, "疑难", "2"),
    "201": _s(_E, "超时未签收", "2"),
    "202": _s(_E, "超时未更新", "2"),
    "203": _s(_E, "拒收", "2"),
    "204": _s(_E, "派件异常", "2"),
    "205": _s(_E, "柜或驿站超时未取", "2"),
    "206": _s(_E, "无法联系", "2"),
    "207": _s(_E, "超区", "2"),
    "208": _s(_E, "滞留", "2"),
    "209": _s(_E, "破损", "2"),
    "210": _s(_E, "销单", "2"),
    "3": _s(_D, "签收", "3"),
    "301": _s(_D, "本人签收", "3"),
    "302": _s(_D, "派件异常后签收", "3"),
    "303": _s(_D, "代签", "3"),
    "304": _s(_D, "投柜或站签收", "3"),
    "4": _s(_R, "退签", "4"),
    "401": _s(_R, "已销单", "4"),
    "5": _s(_O, "派件", "5"),
    "501": _s(_O, "投柜或驿站", "5"),
    "6": _s(_R, "退回", "6"),
    "7": _s(_T, "转投", "7"),
    "8": _s(_T, "清关", "8"),
    "10": _s(_T, "待清关", "8"),
    "11": _s(_T, "清关中", "8"),
    "12": _s(_T, "已清关", "8"),
    "13": _s(_T, "清关异常", "8"),
    "14": _s(_E, "拒签", "14"),
})

#: Kuaidi100's state names (data[].status with resultv2=1) -> code. 转单 is the older name of
#: 转投 in Kuaidi100's own documents.
_CODE_BY_NAME: Mapping[str, str] = MappingProxyType(
    {**{info.name: code for code, info in KUAIDI100_STATES.items()}, "转单": "7"})

#: The code the simulator (and anyone writing Kuaidi100 answers) uses for each stage.
STATE_FOR_STAGE: Mapping[Stage, str] = MappingProxyType({
    Stage.PICKED_UP: "1",
    Stage.IN_TRANSIT: "0",
    Stage.OUT_FOR_DELIVERY: "5",
    Stage.DELIVERED: "3",
    Stage.EXCEPTION: "2",
    Stage.RETURNED: "6",
})


def _code_order(code: str) -> tuple[int, int]:
    return (len(code), int(code))


def normalize_state(value: object, context: str = "") -> str:
    """A Kuaidi100 state code as its canonical string ("3", "1002"); accepts ints and
    numeric strings. Raises :class:`UnknownState` for anything not in the table."""
    if isinstance(value, bool):
        raise UnknownState(value, context)
    if isinstance(value, int):
        code = str(value)
    elif isinstance(value, str):
        code = value.strip()
    else:
        raise UnknownState(value, context)
    if code not in KUAIDI100_STATES:
        raise UnknownState(value, context)
    return code


def stage_for_state(value: object) -> Stage:
    """The stage of a Kuaidi100 state code, main ("0".."14") or advanced ("1002")."""
    return KUAIDI100_STATES[normalize_state(value)].stage


def state_for_name(name: str, context: str = "") -> str:
    """The code for a Kuaidi100 state name ("在途" -> "0"); unknown names raise."""
    code = _CODE_BY_NAME.get(name.strip())
    if code is None:
        raise UnknownState(name, context)
    return code
