"""Network transactions as data: settings validation, target state, plan, rollback plan,
and the transaction store's rules (one pending change, confirm before the deadline)."""


import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from appliance.errors import Conflict, InvalidInput
from appliance.router import network
from appliance.router.network import Link, NetState, NetworkSettings, Route, StaticRoute, plan
from appliance.state.db import Store


def kernel_state():
    return NetState({
        "lo": Link("lo"),
        "lan0": Link("lan0", "veth", True, None, frozenset({"10.77.0.1/24"})),
        "lan1": Link("lan1", "veth", False, None, frozenset()),
        "wan0": Link("wan0", "veth", True, None, frozenset({"192.0.2.1/24"})),
    }, frozenset({Route("default", "192.0.2.254", "wan0")}))


def settings(**kw):
    base = dict(lan_interface="lan0", lan_address="10.77.0.1/24", wan_interface="wan0",
                wan_mode="static", wan_address="192.0.2.1/24", wan_gateway="192.0.2.254")
    return network._validate(NetworkSettings(**{**base, **kw}))


def ops_for(s, cur=None):
    cur = cur or kernel_state()
    names = network.managed_names(s, cur)
    return [str(o) for o in plan(cur.restrict(names), network.target_state(s, cur))]


def test_same_settings_plan_nothing():
    assert ops_for(settings()) == []


def test_address_change_removes_old_then_adds_new():
    assert ops_for(settings(lan_address="10.88.0.1/24")) == [
        "addr_del lan0 10.77.0.1/24", "addr_add lan0 10.88.0.1/24"]


def test_bridge_over_two_ports_moves_the_address():
    ops = ops_for(settings(lan_interface="br-lan", lan_ports=("lan0", "lan1")))
    assert ops == ["bridge_add br-lan", "addr_add br-lan 10.77.0.1/24", "up br-lan",
                   "master lan0 br-lan", "addr_del lan0 10.77.0.1/24",
                   "master lan1 br-lan", "up lan1"]


def test_wan_to_dhcp_and_gateway_change():
    ops = ops_for(settings(wan_mode="dhcp", wan_address=None, wan_gateway=None))
    assert ops == ["dhcp_start wan0"]  # DHCP owns the address and default route now
    ops = ops_for(settings(wan_gateway="192.0.2.253"))
    assert ops == ["route_del wan0 default via 192.0.2.254", "route_add wan0 default via 192.0.2.253"]


def test_static_route_device_resolved_from_the_gateway():
    ops = ops_for(settings(routes=(StaticRoute("10.200.0.0/16", "10.77.0.50"),)))
    assert ops == ["route_add lan0 10.200.0.0/16 via 10.77.0.50"]


def test_missing_interface_is_a_clear_error():
    with pytest.raises(InvalidInput, match="no such interface: eth9"):
        ops_for(settings(lan_ports=("lan0", "eth9"), lan_interface="br0"))
    with pytest.raises(InvalidInput, match="not a bridge"):
        ops_for(settings(lan_interface="wan1", lan_ports=("lan0",), wan_interface="lan1",
                         wan_mode="dhcp"),
                NetState({**kernel_state().links, "wan1": Link("wan1", "veth")}))


@pytest.mark.parametrize("kw,field", [
    ({"lan_address": "10.77.0.1"}, "lan_address"),
    ({"lan_address": "300.1.1.1/24"}, "lan_address"),
    ({"lan_interface": "a" * 16}, "lan_interface"),
    ({"wan_gateway": "10.1.1.1"}, "wan_gateway"),
    ({"wan_address": "10.77.0.9/24", "wan_gateway": None}, "wan_address"),
    ({"wan_mode": "pppoe"}, "wan_mode"),
    ({"lan_ports": ("wan0",), "lan_interface": "br0"}, "wan_interface"),
    ({"routes": (StaticRoute("10.0.0.0/33", "10.77.0.5"),)}, "routes[0]"),
    ({"routes": (StaticRoute("10.9.0.0/16"),)}, "routes[0]"),
])
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(InvalidInput) as e:
        settings(**kw)
    assert e.value.field == field


def test_rollback_plan_restores_before_and_deletes_the_new_bridge():
    before = kernel_state()
    s = settings(lan_interface="br-lan", lan_ports=("lan0", "lan1"),
                 wan_gateway="192.0.2.253")
    names = network.managed_names(s, before)
    target = network.target_state(s, before)
    after = NetState({**before.links, **target.links}, target.routes)  # as if applied
    tgt = network.rollback_target(before.restrict(names), after.restrict(names | {"br-lan"}))
    undo = [str(o) for o in plan(after.restrict(set(tgt.links)), tgt)]
    assert undo == ["route_del wan0 default via 192.0.2.253", "nomaster lan0",
                    "addr_add lan0 10.77.0.1/24", "nomaster lan1", "down lan1",
                    "route_add wan0 default via 192.0.2.254", "link_del br-lan"]


def test_state_json_round_trip():
    st = kernel_state()
    st.links["wan0"] = Link("wan0", "veth", True, None, None)
    st2 = NetState.from_json(st.to_json())
    assert st2.links == st.links and st2.routes == st.routes


def test_settings_from_dict_refuses_unknown_keys():
    with pytest.raises(InvalidInput, match="unknown network setting"):
        NetworkSettings.from_dict({"lan_interface": "x", "lan_address": "10.0.0.1/24", "foo": 1})
    s = NetworkSettings.from_dict(settings(routes=(StaticRoute("default", "192.0.2.9"),)).to_dict())
    assert s.routes == (StaticRoute("default", "192.0.2.9"),)


class FakeKernel:
    """Records operations instead of calling netlink (the real one runs in tests/netns)."""

    netns = None
    state_dir = "/nonexistent"
    dhcp_client = "udhcpc"

    def __init__(self):
        self.state = kernel_state()
        self.applied = []

    def read(self, names=None):
        return self.state.restrict(names) if names else self.state

    def apply(self, ops):
        self.applied.append([str(o) for o in ops])


class StepClocks:
    """Clocks a test moves: the wall clock and the boot clock separately, and the boot id."""

    def __init__(self):
        self.wall_t, self.boot_t, self.boot = 1_700_000_000.0, 500.0, "boot-1"

    def clocks(self):
        return network.Clocks(wall=lambda: self.wall_t, boot=lambda: self.boot_t,
                              boot_id=lambda: self.boot)


def test_transaction_rules(state_dir, monkeypatch):
    conn = Store(state_dir / "nixie.db").conn()
    k = FakeKernel()
    monkeypatch.setattr(network, "Kernel", lambda *a, **kw: k)
    t = StepClocks()
    txn = network.begin(conn, k, settings(lan_address="10.88.0.1/24"), 5, timer=False,
                        clocks=t.clocks())
    assert txn["state"] == "pending" and k.applied == [["addr_del lan0 10.77.0.1/24",
                                                        "addr_add lan0 10.88.0.1/24"]]
    with pytest.raises(Conflict):
        network.begin(conn, k, settings(), 5, timer=False)
    assert network.rollback_due(conn, k, t.clocks()) == []  # not yet due
    t.boot_t += 5
    with pytest.raises(Conflict, match="past its deadline"):
        network.confirm(conn, txn["id"], t.clocks())
    assert network.rollback_due(conn, k, t.clocks()) == [txn["id"]]
    assert network._row(conn, txn["id"])["state"] == "rolled_back"
    # confirmed: the settings become the saved ones
    txn2 = network.begin(conn, k, settings(lan_address="10.77.0.2/24"), 30, timer=False,
                         clocks=t.clocks())
    network.confirm(conn, txn2["id"], t.clocks())
    assert network.load_settings(conn, None).lan_address == "10.77.0.2/24"
    assert network.rollback_due(conn, k, t.clocks()) == []
    with pytest.raises(Conflict):
        network.confirm(conn, txn2["id"], t.clocks())


def test_a_wall_clock_step_back_does_not_delay_the_rollback(state_dir):
    """The deadline is on the boot clock: the wall clock stepping back an hour (NTP, an
    admin) right after the change leaves it due when its window has passed."""
    conn = Store(state_dir / "nixie.db").conn()
    k = FakeKernel()
    t = StepClocks()
    txn = network.begin(conn, k, settings(lan_address="10.88.0.1/24"), 10, timer=False,
                        clocks=t.clocks())
    t.wall_t -= 3600
    t.boot_t += 4
    assert network.rollback_due(conn, k, t.clocks()) == []
    assert network.pending(conn, t.clocks())["seconds_left"] == pytest.approx(6.0)
    t.boot_t += 6.5
    t.wall_t += 6.5  # still an hour before the wall-clock deadline
    assert network._row(conn, txn["id"])["deadline"] > t.wall_t + 3000
    assert network.rollback_due(conn, k, t.clocks()) == [txn["id"]]
    row = network._row(conn, txn["id"])
    assert (row["state"], row["error"]) == ("rolled_back", "not confirmed in time")


def test_a_change_pending_across_a_reboot_is_due_at_once(state_dir):
    conn = Store(state_dir / "nixie.db").conn()
    k = FakeKernel()
    t = StepClocks()
    txn = network.begin(conn, k, settings(lan_address="10.88.0.1/24"), 600, timer=False,
                        clocks=t.clocks())
    t.boot, t.boot_t = "boot-2", 3.0  # rebooted: the boot clock starts again near zero
    row = network._row(conn, txn["id"])
    assert network.due_reason(row, t.clocks()) == \
        "the machine restarted before the change was confirmed"
    with pytest.raises(Conflict, match="restarted"):
        network.confirm(conn, txn["id"], t.clocks())
    assert network.rollback_due(conn, k, t.clocks()) == [txn["id"]]


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                    st.lists(st.text(max_size=8), max_size=3),
                    st.lists(st.dictionaries(st.sampled_from(["dst", "via", "dev", "x"]),
                                             st.one_of(st.none(), st.text(max_size=12))), max_size=2))


@hsettings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["lan_interface", "lan_address", "lan_ports", "wan_interface",
                                        "wan_mode", "wan_address", "wan_gateway", "routes", "junk"]),
                       _values))
def test_settings_from_ui_input_either_parse_or_name_the_problem(data):
    try:
        s = NetworkSettings.from_dict(data)
    except InvalidInput as e:
        assert str(e)
        return
    assert NetworkSettings.from_dict(s.to_dict()) == s
