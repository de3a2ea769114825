from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the development admin user (admin/admin) if it does not exist."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default="admin")

    def handle(self, *args, username: str, password: str, **options) -> None:
        users = get_user_model().objects
        if users.filter(username=username).exists():
            self.stdout.write(f"admin user {username!r} exists")
            return
        users.create_superuser(username=username, email="", password=password)
        self.stdout.write(f"created admin user {username!r}")
