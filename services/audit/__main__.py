from runtime.service import run_service
from services.audit.main import SPEC

run_service(SPEC)
