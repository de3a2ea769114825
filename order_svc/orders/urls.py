from rest_framework.routers import SimpleRouter

from order_svc.orders.api import OrderViewSet

router = SimpleRouter()
router.register("orders", OrderViewSet, basename="order")
urlpatterns = router.urls
