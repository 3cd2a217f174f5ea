from runtime.service import run_service
from services.notification.main import SPEC

run_service(SPEC)
