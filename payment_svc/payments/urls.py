from rest_framework.routers import SimpleRouter

from payment_svc.payments.api import AccountViewSet, PaymentViewSet

router = SimpleRouter()
router.register("accounts", AccountViewSet, basename="account")
router.register("payments", PaymentViewSet, basename="payment")
urlpatterns = router.urls
