"""HAProxy's ``show stat`` to per-version counters: pure, with HAProxy's real column names."""

from __future__ import annotations

from conveyor.traffic.haproxy.plan import ServerSpec, Slot
from conveyor.traffic.haproxy.stats import Tally, merge, parse_stat, worker_view

# Columns in a different order than HAProxy prints them, plus ones we ignore: parsing must
# go by name. The numbers are what HAProxy 2.6 reported in the experiments that shaped the
# accounting rules: a dead server whose requests were all retried elsewhere (wretr only), a
# server with one empty response (eresp) and one response cut short (2xx + eresp + srv_abrt).
CSV = """\
# svname,pxname,scur,stot,econ,eresp,wretr,status,weight,hrsp_1xx,hrsp_2xx,hrsp_3xx,\
hrsp_4xx,hrsp_5xx,hrsp_other,srv_abrt,
FRONTEND,fe.shop.prod,3,900,,,,OPEN,,0,850,0,0,0,0,,
v1__a,be.shop.prod,2,418,0,0,0,UP,200,0,418,0,3,1,0,0,
v2__b,be.shop.prod,0,205,0,0,199,UP,56,0,0,0,0,0,0,0,
v2__c,be.shop.prod,1,9,2,2,4,UP,56,0,1,0,0,1,0,1,
BACKEND,be.shop.prod,3,632,5,2,203,UP,312,0,419,0,3,5,0,1,
v9__z,be.other.prod,0,1,0,0,0,UP,1,0,1,0,0,0,0,0,
"""

BACKENDS = {"be.shop.prod": "shop/prod", "be.shop.prod.preview": "shop/prod"}


def _slot(name: str, version: str) -> Slot:
    return Slot(name, ServerSpec(version, name, "127.0.0.1", 1, 1))


SLOTS = {
    "be.shop.prod": {
        "v1__a": _slot("v1__a", "v1"),
        "v2__b": _slot("v2__b", "v2"),
        "v2__c": _slot("v2__c", "v2"),
    }
}


def test_rows_are_read_by_column_name_and_frontends_skipped() -> None:
    rows = parse_stat(CSV)
    assert [(r.proxy, r.server) for r in rows][:2] == [
        ("be.shop.prod", "v1__a"),
        ("be.shop.prod", "v2__b"),
    ]
    first = rows[0]
    assert (first.scur, first.weight, first.status) == (2, 200, "UP")
    assert first.tally == Tally(hrsp_2xx=418, hrsp_4xx=3, hrsp_5xx=1)
    assert rows[3].is_backend


def test_per_version_counters_follow_the_built_in_rules() -> None:
    view = worker_view(parse_stat(CSV), BACKENDS, SLOTS, {}, {}, "-")["shop/prod"]
    v1 = view["v1"].counters()
    assert (v1.requests, v1.responses_2xx, v1.responses_4xx, v1.responses_5xx) == (
        422,
        418,
        3,
        1,
    )
    v2 = view["v2"].counters()
    # retried attempts (wretr) are not requests of the dead server's version;
    # 1 cut short + 1 empty response + 2 refused on the last retry = 4 proxy errors
    assert v2.proxy_errors == 4
    assert v2.requests == 1 + 1 + 2 + 2 - 1  # 2xx + 5xx + econ + eresp - counted twice
    assert v2.errors == v2.responses_5xx + v2.proxy_errors
    assert v2.retried == 199 + 4  # shown, but not errors: HAProxy cannot say which were 5xx
    # backend econ 5 - servers' 2: three requests found no server at all
    assert view["-"].counters().proxy_errors == 3
    assert view["-"].counters().requests == 3


def test_a_reused_slot_counts_only_since_its_baseline_and_banks_the_rest() -> None:
    # v1__a served v0 for its first 400 2xx (banked when it was parked), then v1
    slots = {"be.shop.prod": {"v1__a": _slot("v1__a", "v1")}}
    baselines = {("be.shop.prod", "v1__a"): Tally(hrsp_2xx=400)}
    banked = {"be.shop.prod": {"v0": Tally(hrsp_2xx=400)}}
    view = worker_view(parse_stat(CSV), BACKENDS, slots, baselines, banked, "-")["shop/prod"]
    assert view["v1"].counters().responses_2xx == 18
    assert view["v0"].counters().requests == 400
    assert "v2" not in view  # free slots count for nobody
    assert view["-"].counters().requests == 3  # unrouted: backend econ minus every slot's


def test_unknown_proxies_are_ignored() -> None:
    assert worker_view(parse_stat(CSV), {}, SLOTS, {}, {}, "-") == {}


def test_merge_sums_views_of_several_workers() -> None:
    one = {"shop/prod": {"v1": Tally(hrsp_2xx=2)}}
    two = {"shop/prod": {"v1": Tally(hrsp_2xx=3), "v2": Tally(econ=1)}}
    assert merge([one, two]) == {"shop/prod": {"v1": Tally(hrsp_2xx=5), "v2": Tally(econ=1)}}


def test_a_non_stats_answer_parses_to_nothing() -> None:
    assert parse_stat("Can't find the target PID matching the prefix '@!42'\n") == ()
