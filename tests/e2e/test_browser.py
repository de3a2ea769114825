"""What an operator sees in a browser: the Order admin (the saga map, list, search, saga
timeline, stuck sagas) and Flower (workers, broker queues), driven by headless Debian chromium through
Playwright. Full-page screenshots go to ``test-artifacts/screenshots/``.

Playwright is only the driver here: its own browser download is not used, the browser is
``/usr/bin/chromium`` (``scripts/test.sh`` installs Debian's ``chromium`` package).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from common.services import SERVICES
from tests.support import (
    COMPLETED_STEPS,
    ROOT,
    SHIPPING_FAILED_STEPS,
    Api,
    ctl,
    manage,
    parked,
    poll,
    publish,
    url,
)

CHROMIUM = Path(os.environ.get("SAGA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
FLOWER = f"http://127.0.0.1:{int(os.environ.get('SAGA_FLOWER_PORT', '5555'))}"
ADMIN_USER = ADMIN_PASSWORD = "admin"
TIMEOUT_MS = 15_000  # any single wait of a page (navigation, an element, a JS-rendered table)
EVENT_QUEUES = [f"{service}.events" for service in SERVICES]


# -- browser -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium "
            "(`apt-get install -y chromium`; scripts/test.sh does it before the e2e suite)"
        )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def admin(page: Page, stack: None) -> Page:
    """A page logged into the Order service's admin."""
    page.goto(url("order", "/admin/login/?next=/admin/"))
    page.fill("#id_username", ADMIN_USER)
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(url("order", "/admin/"))
    expect(page.locator("#user-tools")).to_contain_text(ADMIN_USER)
    return page


def status_text(status: str) -> re.Pattern[str]:
    """The admin shows the status choice's label ("Completed" for COMPLETED)."""
    return re.compile(rf"^\s*{status}\s*$", re.IGNORECASE)


def goto(page: Page, address: str) -> None:
    """Navigate and insist on a 200 (a redirect to the login page would be a 200 too: callers
    check what they expect to see)."""
    response = page.goto(address)
    assert response is not None, address
    assert response.status == 200, f"{address}: HTTP {response.status}"


def screenshot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


# -- the two orders ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def orders(stack: None) -> dict[str, dict[str, Any]]:
    """One order that completes and one cancelled by shipping (country AQ), both terminal."""
    api = Api()
    sku = api.product(price="3.00", available=10)
    customer = api.account(balance="100.00", customer_id=f"browser-{uuid.uuid4().hex[:10]}")
    placed = {
        "completed": api.place(customer, [(sku, 2)], "FR"),
        "cancelled": api.place(customer, [(sku, 1)], "AQ"),
    }
    final = {name: api.wait_terminal(order["id"]) for name, order in placed.items()}
    assert final["completed"]["status"] == "COMPLETED", final["completed"]
    assert final["cancelled"]["status"] == "CANCELLED", final["cancelled"]
    return final


def timeline_events(page: Page) -> list[str]:
    table = page.locator("table.saga-timeline")
    expect(table).to_be_visible()
    return [text.strip() for text in table.locator("tbody tr td:nth-child(2) b").all_inner_texts()]


def open_change_page(page: Page, order_id: str, *, until: str | None = None, timeout: float = 20.0) -> None:
    """Open the order's change page; with ``until``, reload until that event is in the timeline."""
    change = url("order", f"/admin/orders/order/{order_id}/change/")
    deadline = time.monotonic() + timeout
    while True:
        goto(page, change)
        expect(page.locator("h1, #content h2").first).to_be_visible()
        if until is None:
            return
        cell = page.locator("table.saga-timeline tbody td b", has_text=re.compile(rf"^{until}$"))
        try:
            # waits up to 1 s for the page as served; the next round reloads it
            expect(cell).to_have_count(1, timeout=1000)
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{until} never showed in the timeline of {order_id} within {timeout}s; "
                    f"it shows {timeline_events(page)}"
                ) from None
        else:
            return


def assert_in_order(events: list[str], expected: list[str]) -> None:
    """Every expected step is there, in this relative order (other events may interleave)."""
    missing = [step for step in expected if step not in events]
    assert not missing, f"timeline lacks {missing}; it shows {events}"
    positions = [events.index(step) for step in expected]
    assert positions == sorted(positions), f"steps out of order: {events}"


def assert_related_links(page: Page, order_id: str) -> None:
    """The links to the other services' admins: right port, the order id as the search."""
    links = page.locator(".field-related_records a")
    expect(links.first).to_be_visible()
    hrefs = {link.inner_text().strip(): link.get_attribute("href") or "" for link in links.all()}
    expected = {
        "reservations": url("inventory", "/admin/inventory/reservation/"),
        "payments and refunds": url("payment", "/admin/payments/payment/"),
        "shipments": url("shipping", "/admin/shipping/shipment/"),
        **{
            f"parked in {service}": url(service, "/admin/messaging/parkedmessage/")
            for service in ("order", "inventory", "payment", "shipping")
        },
    }
    assert set(hrefs) == set(expected), hrefs
    for text, prefix in expected.items():
        assert hrefs[text].startswith(prefix), (text, hrefs[text], prefix)
        assert order_id in hrefs[text], (text, hrefs[text])
    for service in ("payment", "inventory", "shipping"):
        port = f":{url(service, '').rsplit(':', 1)[1]}/"
        assert any(port in href for href in hrefs.values()), (service, hrefs)


# -- the Order admin -----------------------------------------------------------------------
def test_order_list_and_search(admin: Page, orders: dict[str, dict[str, Any]]) -> None:
    page = admin
    goto(page, url("order", "/admin/orders/order/"))
    results = page.locator("#result_list")
    expect(results).to_be_visible()
    for order in orders.values():
        row = results.locator("tbody tr", has=page.locator("th.field-id", has_text=order["id"]))
        expect(row, f"order {order['id']} is not on the first page of the list").to_have_count(1)
        expect(row.locator("td.field-status")).to_have_text(status_text(order["status"]))
    expect(page.locator("#changelist-filter")).to_contain_text("By status")
    expect(page.locator("#changelist-filter")).to_contain_text("By age")
    screenshot(page, "order-list.png")

    for order in orders.values():
        search = page.locator("#searchbar")
        search.fill(order["id"])
        search.press("Enter")
        expect(page).to_have_url(re.compile(rf"[?&]q={order['id']}"))
        rows = page.locator("#result_list tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first.locator("th.field-id")).to_have_text(order["id"])
        expect(rows.first.locator("td.field-status")).to_have_text(status_text(order["status"]))


def test_completed_order_page(admin: Page, orders: dict[str, dict[str, Any]]) -> None:
    page, order = admin, orders["completed"]
    # InventoryDeducted answers OrderCompleted, so it may land just after the order is terminal
    open_change_page(page, order["id"], until="InventoryDeducted")
    events = timeline_events(page)
    assert_in_order(events, [*COMPLETED_STEPS, "InventoryDeducted"])
    assert events[0] == "OrderPlaced", events
    expect(page.locator("table.saga-timeline tr.parked")).to_have_count(0)
    expect(page.locator(".field-status .readonly")).to_have_text(status_text("COMPLETED"))
    expect(page.locator(".field-compensation_status .readonly")).to_have_text("none needed")
    assert_related_links(page, order["id"])
    screenshot(page, "order-completed.png")


def test_cancelled_order_page(admin: Page, orders: dict[str, dict[str, Any]]) -> None:
    page, order = admin, orders["cancelled"]
    open_change_page(page, order["id"])
    events = timeline_events(page)
    assert_in_order(events, SHIPPING_FAILED_STEPS[:4])
    assert_in_order(events, ["ShipmentFailed", "InventoryReleased"])
    assert_in_order(events, ["ShipmentFailed", "PaymentRefunded"])
    assert events[0] == "OrderPlaced", events
    expect(page.locator("table.saga-timeline tr.parked")).to_have_count(0)
    expect(page.locator(".field-status .readonly")).to_have_text(status_text("CANCELLED"))
    expect(page.locator(".field-failure_reason .readonly")).to_contain_text(
        "destination country AQ is not served"
    )
    failed = page.locator("table.saga-timeline tbody tr", has=page.locator("b", has_text="ShipmentFailed"))
    expect(failed).to_contain_text("destination country AQ is not served")
    compensation = page.locator(".field-compensation_status .readonly")
    expect(compensation).to_contain_text("InventoryReleased")
    expect(compensation).to_contain_text("PaymentRefunded")
    expect(compensation).to_contain_text("(complete)")
    expect(compensation).not_to_contain_text("still waiting")
    assert_related_links(page, order["id"])
    screenshot(page, "order-cancelled.png")


def test_stuck_sagas_page(admin: Page) -> None:
    page = admin
    goto(page, url("order", "/admin/orders/stuckorder/"))
    expect(page).to_have_title(re.compile("stuck saga", re.IGNORECASE))
    expect(page.locator("#changelist")).to_be_visible()


# -- Flower ----------------------------------------------------------------------------------
def test_flower_lists_the_four_workers(page: Page) -> None:
    goto(page, f"{FLOWER}/")
    # DataTables fills the table from /workers?json=1 and redraws it every second
    rows = page.locator("#workers-table tbody tr")
    for service in SERVICES:
        online = rows.filter(has=page.locator("td:first-child", has_text=re.compile(rf"^\s*{service}-\d+@")))
        expect(online.filter(has_text="Online").first, f"no online {service}-N@host worker").to_be_visible()
    names = [name.strip() for name in rows.locator("td:first-child").all_text_contents()]
    for service in SERVICES:
        assert any(name.startswith(f"{service}-") for name in names), names
    screenshot(page, "flower-workers.png")


def test_flower_broker_page_renders(page: Page) -> None:
    # Flower lists only the queues its cached worker inspection names; the inspection it
    # runs at start-up finds no worker when it starts before them, so ask for a new one
    # (what the Refresh button of a worker page does), then wait for the queue rows.
    refreshed = page.request.get(f"{FLOWER}/workers?refresh=1&json=1")
    assert refreshed.status == 200, refreshed.text()
    deadline = time.monotonic() + 20
    while True:
        goto(page, f"{FLOWER}/broker")
        expect(page.locator(".broker-url")).to_contain_text("127.0.0.1")
        queues = page.locator("#queue-table tbody tr td:first-child:not(.empty-table-message)")
        try:
            expect(queues.first).to_be_visible(timeout=1000)
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    "Flower's broker page shows no queue at all; see var/log/flower.log"
                ) from None
        else:
            break
    screenshot(page, "flower-broker.png")


def test_flower_broker_lists_the_event_queues(page: Page) -> None:
    refreshed = page.request.get(f"{FLOWER}/workers?refresh=1&json=1")
    assert refreshed.status == 200, refreshed.text()
    goto(page, f"{FLOWER}/broker")
    table = page.locator("#queue-table")
    for queue in EVENT_QUEUES:
        expect(table.locator("td", has_text=re.compile(rf"^{re.escape(queue)}$"))).to_have_count(
            1, timeout=5000
        )


# -- the saga map ---------------------------------------------------------------------------
# The arrows a completed and a shipping-failed saga take (producer_event_consumer).
MAP_ARROWS_TAKEN = [
    "order_OrderPlaced_inventory",
    "inventory_InventoryReserved_order",
    "inventory_InventoryReserved_payment",
    "payment_PaymentCompleted_order",
    "payment_PaymentCompleted_shipping",
    "shipping_ShipmentScheduled_order",
    "order_OrderCompleted_inventory",
    "inventory_InventoryDeducted_order",
    "shipping_ShipmentFailed_order",
    "shipping_ShipmentFailed_inventory",
    "shipping_ShipmentFailed_payment",
    "inventory_InventoryReleased_order",
    "payment_PaymentRefunded_order",
]
MAP_SECONDS = 30.0  # the relays roll their figures up every SAGA_FLOW_SECONDS (5 s)


def map_until(page: Page, what: str, done: Any, *, timeout: float = MAP_SECONDS) -> None:
    """Reload the Order admin's home until ``done(page)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        goto(page, url("order", "/admin/?window=5m"))
        if done(page):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the saga map did not show {what} within {timeout:.0f}s")
        time.sleep(1.0)


def classes(page: Page, selector: str) -> set[str]:
    return set((page.locator(selector).get_attribute("class") or "").split())


def test_the_saga_map_shows_every_arrow_the_sagas_took(
    admin: Page, orders: dict[str, dict[str, Any]]
) -> None:
    page = admin
    map_until(
        page,
        "figures on every arrow the two sagas took",
        lambda p: all("idle" not in classes(p, f"g#edge_{arrow}") for arrow in MAP_ARROWS_TAKEN),
    )
    for arrow in MAP_ARROWS_TAKEN:
        expect(page.locator(f"g#edge_{arrow}")).to_contain_text(re.compile(r"[1-9]\d* handled"))
    for service in SERVICES:
        expect(page.locator(f"g#svc_{service}")).to_be_visible()
        expect(page.locator(f"#person-{service} td.workers")).to_contain_text("consuming")
        expect(page.locator(f"#person-{service} td.relay")).to_have_text("up")
    # The map names the choreography in the page itself (an inline SVG, not a picture).
    expect(page.locator(".saga-map-graph svg text", has_text="OrderCancelled").first).to_be_visible()
    expect(page.locator("g.compensation").first).to_be_attached()
    expect(page.locator("#orders-by-status")).to_contain_text(re.compile(r"COMPLETED [1-9]"))
    # The figures that need a person are the command line's.
    stuck = manage("order", "saga", "stuck").strip()
    stuck_count = 0 if stuck == "no stuck sagas" else len(stuck.splitlines())
    expect(page.locator("#stuck-link")).to_contain_text(f"past their deadline) {stuck_count}")
    for service in SERVICES:
        waiting = len(json.loads(manage(service, "parked", "list", "--json")))
        expect(page.locator(f"#person-{service} td.parked")).to_have_text(str(waiting))
    page.click("#orders-by-status a:has-text('COMPLETED')")
    expect(page.locator("#result_list")).to_contain_text(orders["completed"]["id"])


def test_a_message_parked_in_payment_stands_out_and_links_to_the_list(
    admin: Page, orders: dict[str, dict[str, Any]]
) -> None:
    from common.messaging.envelope import Envelope

    page, marker = admin, f"map-{uuid.uuid4().hex[:8]}"
    unsigned = Envelope(  # no signature: payment parks it (untrusted) without handling it
        event_type="InventoryReserved",
        saga_id=str(uuid.uuid4()),
        producer="inventory",
        payload={"customer_id": marker, "total": "1.00", "lines": []},
    )
    publish("payment.events", unsigned.to_json(), exchange="")
    found = poll(
        lambda: parked("payment", unsigned.saga_id),
        lambda rows: len(rows) == 1,
        timeout=15,
        what="the unsigned event in payment's parking lot",
    )
    try:
        map_until(
            page,
            "payment's box and its InventoryReserved arrow marked",
            lambda p: (
                "problem" in classes(p, "g#svc_payment")
                and "problem" in classes(p, "g#edge_inventory_InventoryReserved_payment")
            ),
        )
        expect(page.locator("#person-payment")).to_have_class(re.compile("problem"))
        expect(page.locator("g#edge_inventory_InventoryReserved_payment")).to_contain_text(
            re.compile(r"[1-9]\d* parked")
        )
        screenshot(page, "saga-map.png")
        page.set_viewport_size({"width": 1400, "height": 1400})
        # docs/saga-map.png is this picture, taken by this test
        page.locator("#saga-map").screenshot(path=str(SCREENSHOTS / "saga-map-panel.png"))
        page.click("#person-payment td.parked a")  # to the payment service's admin: its own login
        page.fill("#id_username", ADMIN_USER)
        page.fill("#id_password", ADMIN_PASSWORD)
        page.click("input[type=submit]")
        expect(page).to_have_url(re.compile(r":\d+/admin/messaging/parkedmessage/\?status__exact=PARKED"))
        expect(page.locator("#result_list")).to_contain_text("InventoryReserved")
    finally:
        manage("payment", "parked", "discard", str(found[0]["id"]), "--operator", "e2e-map", "--note", marker)


def test_a_stopped_worker_shows_as_down_with_its_backlog(admin: Page) -> None:
    page, api = admin, Api()
    ctl("stop", "payment-worker:*")
    try:
        stopped = time.monotonic()
        map_until(
            page,
            "payment's workers down",
            lambda p: "down" in p.locator("#person-payment td.workers").inner_text(),
        )
        down_after = time.monotonic() - stopped
        assert down_after < 10, f"payment shown down only after {down_after:.1f}s"
        expect(page.locator("g#svc_payment")).to_have_class(re.compile("problem"))
        order = api.place(api.account(balance="10.00"), [(api.product(price="1.00", available=5), 1)])
        map_until(
            page,
            "the event waiting in payment's queue",
            lambda p: p.locator("#person-payment td.backlog").inner_text().strip() not in ("0", "?"),
        )
    finally:
        ctl("start", "payment-worker:*")
    assert api.wait_terminal(order["id"])["status"] == "COMPLETED"
    map_until(
        page,
        "payment's workers back",
        lambda p: "consuming" in p.locator("#person-payment td.workers").inner_text(),
    )
