from runtime.service import run_service
from services.analytics.main import SPEC

run_service(SPEC)
