from rest_framework.routers import SimpleRouter

from inventory_svc.inventory.api import ProductViewSet, ReservationViewSet

router = SimpleRouter()
router.register("products", ProductViewSet, basename="product")
router.register("reservations", ReservationViewSet, basename="reservation")
urlpatterns = router.urls
