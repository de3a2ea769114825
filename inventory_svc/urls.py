from common.web.urls import service_urlpatterns

urlpatterns = service_urlpatterns("inventory_svc.inventory.urls")
handler404 = "common.web.api.handler404"
handler500 = "common.web.api.handler500"
