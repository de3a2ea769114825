from common.web.urls import service_urlpatterns

urlpatterns = service_urlpatterns("order_svc.orders.urls")
handler404 = "common.web.api.handler404"
handler500 = "common.web.api.handler500"
