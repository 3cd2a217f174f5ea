from runtime.service import run_service
from services.risk.main import SPEC

run_service(SPEC)
