"""Secrets come from the environment; without DEBUG, development defaults are refused."""

from __future__ import annotations

import pytest

from common.services import SERVICES
from common.settings import configure, dev_event_key

STRONG = {
    "SAGA_SECRET_KEY": "a production secret key of some length",
    "SAGA_API_TOKEN": "a production api token",
    "SAGA_EVENT_KEY_PAYMENT": "payment's production event key",
    "SAGA_EVENT_KEY_INVENTORY": "inventory's production event key",
    "SAGA_PAYMENT_DB_PASSWORD": "payment's database password",
    "SAGA_PAYMENT_AMQP_PASSWORD": "payment's broker password",
}


def configured(monkeypatch: pytest.MonkeyPatch, **environ: str) -> dict:
    services = ("ORDER", "PAYMENT", "INVENTORY", "SHIPPING")
    names = ("SAGA_SECRET_KEY", "SAGA_API_TOKEN", "SAGA_BROKER_URL", "SAGA_BROKER_PORT", "SAGA_AMQP_PORT")
    for name in (*names, *STRONG, *(f"SAGA_EVENT_KEY_{s}" for s in services)):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    namespace: dict = {}
    configure(namespace, service="payment", domain_app="payment_svc.payments")
    return namespace


def test_development_defaults_work_with_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configured(monkeypatch, SAGA_DEBUG="1")
    assert settings["SAGA_EVENT_KEYS"]["payment"] == [dev_event_key("payment").encode()]
    assert set(settings["SAGA_EVENT_KEYS"]) == set(SERVICES)


def test_production_settings_know_only_the_keys_they_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configured(monkeypatch, SAGA_DEBUG="0", **STRONG)
    assert settings["DEBUG"] is False
    assert set(settings["SAGA_EVENT_KEYS"]) == {"payment", "inventory"}  # an order event would be parked


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SAGA_SECRET_KEY": ""}, "SAGA_SECRET_KEY or SAGA_API_TOKEN still has its development default"),
        ({"SAGA_API_TOKEN": ""}, "SAGA_SECRET_KEY or SAGA_API_TOKEN still has its development default"),
        ({"SAGA_EVENT_KEY_PAYMENT": ""}, "SAGA_EVENT_KEY_PAYMENT is not set: payment cannot sign"),
        ({"SAGA_EVENT_KEY_INVENTORY": dev_event_key("inventory")}, "event key of inventory is a development"),
        ({"SAGA_EVENT_KEY_PAYMENT": "short"}, "event key of payment is a development default or shorter"),
        ({"SAGA_PAYMENT_DB_PASSWORD": ""}, "SAGA_PAYMENT_DB_PASSWORD is unset or a development default"),
        ({"SAGA_PAYMENT_DB_PASSWORD": "saga_payment"}, "SAGA_PAYMENT_DB_PASSWORD is unset or a development"),
        ({"SAGA_PAYMENT_AMQP_PASSWORD": ""}, "SAGA_PAYMENT_AMQP_PASSWORD is unset or a development default"),
    ],
)
def test_without_debug_weak_or_missing_secrets_are_refused(
    monkeypatch: pytest.MonkeyPatch, change: dict[str, str], message: str
) -> None:
    environ = {**STRONG, **change}
    with pytest.raises(RuntimeError, match=message):
        configured(monkeypatch, SAGA_DEBUG="0", **{k: v for k, v in environ.items() if v})


def test_each_service_connects_to_the_broker_as_its_own_user(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configured(monkeypatch, SAGA_DEBUG="1", SAGA_BROKER_PORT="5673")
    assert settings["SAGA_BROKER_URL"] == "amqp://saga_payment:saga_payment@127.0.0.1:5673/saga"
    assert settings["CELERY_BROKER_URL"] == settings["SAGA_BROKER_URL"]
    production = configured(
        monkeypatch, SAGA_DEBUG="0", **{**STRONG, "SAGA_PAYMENT_AMQP_PASSWORD": "p@ss/word"}
    )
    assert production["SAGA_BROKER_URL"] == "amqp://saga_payment:p%40ss%2Fword@127.0.0.1:5672/saga"


def test_an_explicit_broker_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "amqp://u:p@rabbitmq-1:5672/saga;amqp://u:p@rabbitmq-2:5672/saga"
    settings = configured(monkeypatch, SAGA_DEBUG="0", SAGA_BROKER_URL=url, **STRONG)
    assert settings["SAGA_BROKER_URL"] == url


def test_service_api_urls_are_named_pairs_and_a_typo_is_refused():
    from common.settings import api_urls

    assert api_urls(["payment=http://payment-web:8002/", " order = http://o:1"]) == {
        "payment": "http://payment-web:8002",
        "order": "http://o:1",
    }
    with pytest.raises(RuntimeError, match="paymnet"):
        api_urls(["paymnet=http://x"])
    with pytest.raises(RuntimeError, match="not <service>=<url>"):
        api_urls(["order"])
