from common.urls import service_urlpatterns

urlpatterns = service_urlpatterns("inventory_svc.inventory.urls")
handler404 = "common.api.handler404"
handler500 = "common.api.handler500"
