from django.contrib import admin
from django.urls import path

from common.web.urls import service_urlpatterns
from order_svc.orders.admin import index_with_map, saga_map_page

urlpatterns = [
    path("admin/", admin.site.admin_view(index_with_map), name="saga-home"),
    path("admin/saga-map/", admin.site.admin_view(saga_map_page), name="saga-map"),
    *service_urlpatterns("order_svc.orders.urls"),
]
handler404 = "common.web.api.handler404"
handler500 = "common.web.api.handler500"
