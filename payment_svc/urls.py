from common.web.urls import service_urlpatterns

urlpatterns = service_urlpatterns("payment_svc.payments.urls")
handler404 = "common.web.api.handler404"
handler500 = "common.web.api.handler500"
