from common.urls import service_urlpatterns

urlpatterns = service_urlpatterns("order_svc.orders.urls")
handler404 = "common.api.handler404"
handler500 = "common.api.handler500"
