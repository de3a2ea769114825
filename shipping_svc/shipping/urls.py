from rest_framework.routers import SimpleRouter

from shipping_svc.shipping.api import ShipmentViewSet

router = SimpleRouter()
router.register("shipments", ShipmentViewSet, basename="shipment")
urlpatterns = router.urls
