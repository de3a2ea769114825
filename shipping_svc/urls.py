from common.urls import service_urlpatterns

urlpatterns = service_urlpatterns("shipping_svc.shipping.urls")
handler404 = "common.api.handler404"
handler500 = "common.api.handler500"
